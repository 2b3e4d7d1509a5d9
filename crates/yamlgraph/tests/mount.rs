//! `mount` graphs: mgmt's fields load (options as mgmt's map or as a list), bad values are
//! reported at the field with file:line:col, and automatic edges order a mount point's
//! directory before the mount and files under it after.

mod real;

use real::{errors, ok};
use serde_json::json;

#[test]
fn mgmt_style_mounts_load() {
    let spec = ok(r#"
graph: g
resources:
  mount:
  - name: /mnt/data
    state: exists
    device: UUID=2d1c3b6e-1111-4a7e-9c1a-0123456789ab
    type: ext4
    options:
      noatime: ""
      commit: "30"
    freq: 0
    passno: 2
  - name: "/mnt/my disk/"
    state: unmounted
    device: LABEL=backup
    type: ext4
    options: [nodev, noexec]
  - name: /mnt/old
    state: absent
"#);
    let params: Vec<_> = spec.resources.iter().map(|r| r.resource.params()).collect();
    assert_eq!(
        params,
        [
            json!({"state": "mounted", "device": "UUID=2d1c3b6e-1111-4a7e-9c1a-0123456789ab",
                "type": "ext4", "options": ["commit=30", "noatime"], "freq": 0, "passno": 2}),
            json!({"state": "unmounted", "device": "LABEL=backup", "type": "ext4",
                "options": ["nodev", "noexec"], "freq": 0, "passno": 0}),
            json!({"state": "absent", "options": [], "freq": 0, "passno": 0}),
        ]
    );
    assert_eq!(spec.resources[1].resource.name(), "/mnt/my disk/");
}

#[test]
fn bad_values_are_reported_at_the_field() {
    let text = "graph: g\nresources:\n  mount:\n  - name: /mnt/data\n    device: /dev/sdb1\n    type: ext4\n    options: [\"size=1 0\"]\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:7:14"), "{e}");
    assert!(
        e.contains("the value must be non-empty, without whitespace or commas"),
        "{e}"
    );
    let text =
        "graph: g\nresources:\n  mount:\n  - name: /mnt/data\n    device: sdb1/x\n    type: ext4\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:5:13"), "{e}");
    assert!(e.contains("write an absolute path, UUID=, LABEL="), "{e}");
    let text = "graph: g\nresources:\n  mount:\n  - name: /mnt/data\n    device: /dev/sdb1\n    type: \"ext4 x\"\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:6:11"), "{e}");
    let text = "graph: g\nresources:\n  mount:\n  - name: /mnt/data\n    state: up\n    device: /dev/sdb1\n    type: ext4\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:5:12"), "{e}");
    assert!(
        e.contains("unknown state `up` (mounted, unmounted or absent)"),
        "{e}"
    );
    let text = "graph: g\nresources:\n  mount:\n  - name: mnt/data\n    state: absent\n";
    let e = errors(text);
    assert!(e.contains("graph.yaml:4:11"), "{e}");
    assert!(e.contains("must be an absolute path"), "{e}");
}

#[test]
fn the_mount_point_directory_comes_before_and_files_under_it_after() {
    let spec = ok(r#"
graph: g
resources:
  file:
  - name: dir
    path: /mnt/data/
    state: exists
  - name: inside
    path: /mnt/data/hello
    content: "hi\n"
  mount:
  - name: /mnt/data
    device: /dev/vdb1
    type: ext4
"#);
    let mut edges = real::edges(&spec);
    edges.sort();
    assert_eq!(
        edges,
        [
            "file[dir] -> file[inside]",
            "file[dir] -> mount[/mnt/data]",
            "mount[/mnt/data] -> file[inside]"
        ]
    );
}
