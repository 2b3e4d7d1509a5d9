//! `sysctl`, `hostname` and `cron` graphs load with the real kinds, bad values are reported at
//! their place (file:line:col), and a `file` resource of `/etc/sysctl.d` or `/etc/cron.d` (or
//! the cron job's `user`) comes first.

mod real;

use real::{edges, errors, ok, params};

#[test]
fn sysctl_hostname_and_cron_graphs_load() {
    let spec = ok(r#"
graph: g
resources:
  sysctl:
  - name: net.ipv4.ip_forward
    value: 1
  - name: net/ipv4/ip_local_port_range
    value: "1024	65000"
    file: /etc/sysctl.d/50-ports.conf
  - name: net.core.somaxconn
    state: absent
  hostname:
  - name: web1.example.com
    pretty_hostname: Web One
  cron:
  - name: backup
    minute: 30
    hour: 2
    weekday: 1-5
    command: /usr/local/bin/backup --quiet
    env:
      MAILTO: ops@example.com
      PATH: /usr/bin:/bin
  - name: at-boot
    schedule: "@reboot"
    user: nobody
    command: logger booted
"#);
    assert_eq!(
        params(&spec),
        [
            r#"sysctl[net.ipv4.ip_forward] {"file":"/etc/sysctl.d/99-mgmt-net.ipv4.ip_forward.conf","state":"exists","value":"1"}"#,
            r#"sysctl[net/ipv4/ip_local_port_range] {"file":"/etc/sysctl.d/50-ports.conf","state":"exists","value":"1024\t65000"}"#,
            r#"sysctl[net.core.somaxconn] {"file":"/etc/sysctl.d/99-mgmt-net.core.somaxconn.conf","state":"absent"}"#,
            r#"hostname[web1.example.com] {"hostname":"web1.example.com","pretty_hostname":"Web One","static_hostname":"web1.example.com","transient_hostname":"web1.example.com"}"#,
            r#"cron[backup] {"command":"/usr/local/bin/backup --quiet","env":{"MAILTO":"ops@example.com","PATH":"/usr/bin:/bin"},"schedule":"30 2 * * 1-5","state":"exists","user":"root"}"#,
            r#"cron[at-boot] {"command":"logger booted","schedule":"@reboot","state":"exists","user":"nobody"}"#,
        ]
    );
}

#[test]
fn mgmts_hostname_fields_load() {
    // mgmt's own field names; "" leaves that name alone.
    let spec = ok(r#"
graph: g
resources:
  hostname:
  - name: h
    hostname: db1
    pretty_hostname: ""
    transient_hostname: db1-dhcp
"#);
    assert_eq!(
        params(&spec),
        [
            r#"hostname[h] {"hostname":"db1","pretty_hostname":"","static_hostname":"db1","transient_hostname":"db1-dhcp"}"#
        ]
    );
}

#[test]
fn bad_values_are_reported_where_they_are() {
    for (text, at, why) in [
        (
            "graph: g\nresources:\n  sysctl:\n  - name: net.ipv4.ip_forward\n    value: \"1\\n2\"\n",
            "graph.yaml:5:12",
            "`value`: must be one line",
        ),
        (
            "graph: g\nresources:\n  sysctl:\n  - name: net/../../etc/passwd\n    value: 1\n",
            "graph.yaml:4:11",
            "is not a sysctl key",
        ),
        (
            "graph: g\nresources:\n  sysctl:\n  - name: kernel.x\n    value: 1\n    file: /etc/sysctl.d/x.txt\n",
            "graph.yaml:6:11",
            "must name a `.conf` file",
        ),
        (
            "graph: g\nresources:\n  hostname:\n  - name: h\n    hostname: web_1\n",
            "graph.yaml:5:15",
            "`web_1` is not a valid host name (RFC 1123",
        ),
        (
            "graph: g\nresources:\n  hostname:\n  - name: h\n    static_hostname: a.-b\n",
            "graph.yaml:5:22",
            "`static_hostname`: `a.-b` is not a valid host name",
        ),
        (
            "graph: g\nresources:\n  cron:\n  - name: job\n    hour: 24\n    command: x\n",
            "graph.yaml:5:11",
            "`hour`: 24 is out of range for hour (0-23)",
        ),
        (
            "graph: g\nresources:\n  cron:\n  - name: job\n    weekday: mon-fri\n    command: x\n",
            "graph.yaml:5:14",
            "must stand alone, not in a list or range",
        ),
        (
            "graph: g\nresources:\n  cron:\n  - name: job.sh\n    command: x\n",
            "graph.yaml:4:11",
            "cron ignores names with characters other than letters, digits, `_` and `-`",
        ),
        (
            "graph: g\nresources:\n  cron:\n  - name: job\n    schedule: \"* * *\"\n    command: x\n",
            "graph.yaml:5:15",
            "`schedule`: `* * *` has 3 fields",
        ),
        (
            "graph: g\nresources:\n  cron:\n  - name: job\n    command: \"x\\n* * * * * root evil\"\n",
            "graph.yaml:5:14",
            "`command`: must be one line",
        ),
    ] {
        let e = errors(text);
        assert!(e.contains(at), "{text}\n{e}");
        assert!(e.contains(why), "{text}\n{e}");
    }
}

#[test]
fn the_directory_and_the_user_come_first() {
    let spec = ok(r#"
graph: g
resources:
  file:
  - name: sysctl.d
    path: /etc/sysctl.d/
  - name: cron.d
    path: /etc/cron.d/
  user:
  - name: backup
  sysctl:
  - name: net.ipv4.ip_forward
    value: 1
  cron:
  - name: job
    user: backup
    command: x
"#);
    assert_eq!(
        edges(&spec),
        [
            "file[sysctl.d] -> sysctl[net.ipv4.ip_forward]",
            "file[cron.d] -> cron[job]",
            "user[backup] -> cron[job]",
        ]
    );
}
