//! `TestbedConfig::device_binds`: a loop device of the machine, bound into a booted host, is a
//! block device there that the host can mount (in its own mount namespace: nothing shows on
//! the machine); bad binds are refused before anything starts.

use std::process::Command;

use testbed::{Testbed, TestbedConfig};

fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn bad_device_binds_are_refused() {
    let err = Testbed::up(TestbedConfig {
        device_binds: vec!["/dev/loop0".into()],
        ..TestbedConfig::hosts(1)
    })
    .expect_err("refused");
    assert!(
        err.to_string().contains("device_binds needs booted hosts"),
        "{err}"
    );
    let err = Testbed::up(TestbedConfig {
        booted: true,
        device_binds: vec!["/etc/hostname".into()],
        ..TestbedConfig::hosts(1)
    })
    .expect_err("refused");
    assert!(
        err.to_string()
            .contains("must be an absolute path to a block device"),
        "{err}"
    );
}

#[test]
fn a_bound_loop_device_mounts_inside_a_booted_host_only() {
    let dir =
        std::path::PathBuf::from(format!("/var/tmp/mgmt-device-binds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("disk.img");
    let img = img.to_str().unwrap();
    sh("truncate", &["-s", "16M", img]);
    sh("mkfs.ext4", &["-q", "-F", img]);
    let dev = sh("losetup", &["--find", "--show", img]);
    struct Detach(String, std::path::PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).output();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _detach = Detach(dev.clone(), dir.clone());
    let bed = Testbed::up(TestbedConfig {
        booted: true,
        device_binds: vec![dev.clone().into()],
        ..TestbedConfig::hosts(1)
    })
    .expect("test bed up");
    let h = &bed.hosts()[0];
    let out = bed
        .exec(
            h,
            &format!("test -b {dev} && mkdir -p /mnt/t && mount {dev} /mnt/t && grep ' /mnt/t ' /proc/mounts && umount /mnt/t"),
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" ext4 "));
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(" /mnt/t ")
    );
    bed.down().unwrap();
}
