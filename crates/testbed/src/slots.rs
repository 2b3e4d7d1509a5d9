//! Slots: how test beds running at the same time (parallel test processes, a person's
//! `scripts/testbed up`) get disjoint names and subnets, and how the leftovers of a crashed run
//! are found and removed.
//!
//! A slot number s (0..128) fixes every global name a test bed uses: network namespaces
//! `mgmt-tbSSS-hN`, links `mtSSSb` (bridge), `mtSSSl` (leaf bridge), `mtSSSvN` / `mtSSSwN`
//! (veth ends), subnets 10.213.(2s).0/24 and 10.213.(2s+1).0/24. The claim on a slot is a state
//! file in /run/mgmt-testbed naming its owner (pid + start time, or `persistent` for a test bed
//! kept by the script) and its directory; claims are made under a lock file. A claim whose owner
//! is dead is a crashed run: its namespaces, links, processes, route and directory are removed.
//! Teardown must never touch anything outside its own slot's names.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{find_program, run, wait_until};
// Booted hosts' systemd-nspawn (machine name = netns name) is found and halted through its
// container in the slot's namespaces; its overlay lives in its own mount namespace only.
use crate::{TestbedError, procs};

pub(crate) const STATE_DIR: &str = "/run/mgmt-testbed";
pub(crate) const SLOTS: u16 = 128;
/// Name of the marker file in a test bed directory; teardown removes only marked directories.
pub(crate) const MARKER: &str = "testbed.state";
const NETNS_DIR: &str = "/run/netns";

/// The global names of one slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Names {
    pub slot: u16,
}

impl Names {
    pub fn netns_prefix(self) -> String {
        format!("mgmt-tb{:03}-", self.slot)
    }
    pub fn netns(self, n: usize) -> String {
        format!("{}h{n}", self.netns_prefix())
    }
    fn link_prefix(self) -> String {
        format!("mt{:03}", self.slot)
    }
    pub fn bridge(self) -> String {
        format!("{}b", self.link_prefix())
    }
    pub fn leaf_bridge(self) -> String {
        format!("{}l", self.link_prefix())
    }
    pub fn veth(self, n: usize) -> String {
        format!("{}v{n}", self.link_prefix())
    }
    pub fn leaf_veth(self, n: usize) -> String {
        format!("{}w{n}", self.link_prefix())
    }
    /// Address `last` on the network reachable from the root namespace.
    pub fn main_addr(self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, (self.slot * 2) as u8, last)
    }
    /// Address `last` on the leaf network (no address of the root namespace is on it).
    pub fn leaf_addr(self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, (self.slot * 2 + 1) as u8, last)
    }
    pub fn leaf_subnet(self) -> String {
        format!("{}/24", self.leaf_addr(0))
    }
    fn owns_link(self, name: &str) -> bool {
        name.strip_prefix(&self.link_prefix())
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| matches!(c, 'b' | 'l' | 'v' | 'w'))
    }
}

fn slot_of_link(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("mt")?.get(..3)?;
    let slot: u16 = digits.parse().ok()?;
    (slot < SLOTS && Names { slot }.owns_link(name)).then_some(slot)
}

fn slot_of_netns(name: &str) -> Option<u16> {
    let rest = name.strip_prefix("mgmt-tb")?;
    let slot: u16 = rest.get(..3)?.parse().ok()?;
    (rest.as_bytes().get(3) == Some(&b'-') && slot < SLOTS).then_some(slot)
}

/// Who holds a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Process { pid: u32, start: u64 },
    Persistent,
}

impl Owner {
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner::Process {
            pid,
            start: procs::start_time(pid).unwrap_or(0),
        }
    }
    fn alive(&self) -> bool {
        match self {
            Owner::Process { pid, start } => procs::alive(*pid, *start),
            Owner::Persistent => true,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub slot: u16,
    pub owner: Owner,
    pub dir: PathBuf,
}

fn state_path(slot: u16) -> PathBuf {
    Path::new(STATE_DIR).join(format!("slot-{slot:03}"))
}

impl Claim {
    fn render(&self) -> String {
        let owner = match &self.owner {
            Owner::Process { pid, start } => format!("{pid} {start}"),
            Owner::Persistent => "persistent".to_string(),
        };
        format!("owner {owner}\ndir {}\n", self.dir.display())
    }

    fn parse(slot: u16, text: &str) -> Option<Claim> {
        let mut owner = None;
        let mut dir = None;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("owner", "persistent")) => owner = Some(Owner::Persistent),
                Some(("owner", rest)) => {
                    let (pid, start) = rest.split_once(' ')?;
                    owner = Some(Owner::Process {
                        pid: pid.parse().ok()?,
                        start: start.parse().ok()?,
                    });
                }
                Some(("dir", path)) => dir = Some(PathBuf::from(path)),
                _ => {}
            }
        }
        Some(Claim {
            slot,
            owner: owner?,
            dir: dir?,
        })
    }

    pub fn write(&self) -> Result<(), TestbedError> {
        let path = state_path(self.slot);
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, self.render()).map_err(|e| TestbedError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| TestbedError::io("rename", &path, e))
    }

    pub fn read(slot: u16) -> Option<Claim> {
        Claim::parse(slot, &fs::read_to_string(state_path(slot)).ok()?)
    }
}

/// The cross-process lock over the slot table; released on drop (closing the file).
struct TableLock {
    _file: fs::File,
}

impl TableLock {
    fn take() -> Result<TableLock, TestbedError> {
        fs::create_dir_all(STATE_DIR).map_err(|e| TestbedError::io("create", STATE_DIR, e))?;
        let file = crate::util::lock_exclusive(&Path::new(STATE_DIR).join("lock"))?;
        Ok(TableLock { _file: file })
    }
}

/// Claims a free slot for `owner`, first cleaning up every crashed run. `dir_for` picks the
/// directory once the slot is known (its default name contains the slot).
pub(crate) fn claim(
    owner: Owner,
    dir_for: impl FnOnce(u16) -> PathBuf,
) -> Result<Claim, TestbedError> {
    let _lock = TableLock::take()?;
    let taken = reap_dead();
    let slot = (0..SLOTS)
        .find(|s| !taken.live.iter().any(|c| c.slot == *s) && !taken.stuck.contains(s))
        .ok_or(TestbedError::NoFreeSlot { slots: SLOTS })?;
    let claim = Claim {
        slot,
        owner,
        dir: dir_for(slot),
    };
    claim.write()?;
    Ok(claim)
}

/// The slot table after removing crashed runs.
struct Table {
    live: Vec<Claim>,
    /// Slots whose leftovers could not be removed: not reused, retried next time.
    stuck: Vec<u16>,
}

/// Removes every crashed run (dead owner, or names without any claim). A leftover that cannot
/// be removed is reported on stderr and its slot avoided, so it never blocks new test beds.
/// Must be called with the table lock held.
fn reap_dead() -> Table {
    let mut table = Table {
        live: Vec::new(),
        stuck: Vec::new(),
    };
    let mut claimed = Vec::new();
    let remove = |slot: u16, dir: Option<PathBuf>, stuck: &mut Vec<u16>| {
        if let Err(e) = teardown(Names { slot }, dir.as_deref()) {
            eprintln!("testbed: cannot remove leftovers of crashed test bed slot {slot}: {e}");
            stuck.push(slot);
        }
    };
    for slot in 0..SLOTS {
        if !state_path(slot).exists() {
            continue;
        }
        claimed.push(slot);
        match Claim::read(slot) {
            Some(c) if c.owner.alive() => table.live.push(c),
            other => remove(slot, other.map(|c| c.dir), &mut table.stuck),
        }
    }
    for slot in orphan_slots() {
        if !claimed.contains(&slot) {
            remove(slot, None, &mut table.stuck);
        }
    }
    table
}

/// Slots that have namespaces or links on this machine.
fn orphan_slots() -> Vec<u16> {
    let mut slots: Vec<u16> = list_dir(Path::new(NETNS_DIR))
        .iter()
        .filter_map(|n| slot_of_netns(n))
        .chain(
            list_dir(Path::new("/sys/class/net"))
                .iter()
                .filter_map(|n| slot_of_link(n)),
        )
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

fn list_dir(path: &Path) -> Vec<String> {
    fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Tears down the claims that `pick` selects (the script's `down` without a directory): takes
/// the table lock, so it never races a claim in progress.
pub(crate) fn teardown_where(pick: impl Fn(&Claim) -> bool) -> Result<Vec<Claim>, TestbedError> {
    let _lock = TableLock::take()?;
    let mut removed = Vec::new();
    for claim in reap_dead().live.into_iter().filter(|c| pick(c)) {
        teardown(Names { slot: claim.slot }, Some(&claim.dir))?;
        removed.push(claim);
    }
    Ok(removed)
}

/// Removes everything of one slot: kills the processes in its namespaces, deletes the
/// namespaces, links and leaf route, removes the directory (only if it holds the marker), and
/// finally the claim.
pub(crate) fn teardown(names: Names, dir: Option<&Path>) -> Result<(), TestbedError> {
    let ip = find_program("ip", "iproute2")?;
    let prefix = names.netns_prefix();
    let namespaces: Vec<String> = list_dir(Path::new(NETNS_DIR))
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let ids: Vec<procs::NsId> = namespaces
        .iter()
        .filter_map(|n| procs::ns_id(&Path::new(NETNS_DIR).join(n)))
        .collect();
    // Booted hosts' containers are halted through their systemd-nspawn first (a kept or
    // crashed run's; a live test bed has halted its own already).
    let halted = crate::booted::stop_in(&ids);
    kill_all_in(&ids)?;
    halted?;
    crate::booted::remove_leftovers(&prefix);

    // Links first: deleting a veth end deletes its peer at once, while a deleted namespace
    // releases its veth pairs later, asynchronously.
    let mut batch = String::new();
    for link in list_dir(Path::new("/sys/class/net")) {
        if names.owns_link(&link) {
            batch.push_str(&format!("link del {link}\n"));
        }
    }
    for ns in &namespaces {
        batch.push_str(&format!("netns del {ns}\n"));
    }
    if !batch.is_empty() {
        run(
            Command::new(&ip).args(["-batch", "-"]),
            Some(batch.as_bytes()),
        )?;
    }
    let routes = run(
        Command::new(&ip).args(["route", "show", "type", "unreachable", &names.leaf_subnet()]),
        None,
    )?;
    if !routes.stdout.is_empty() {
        run(
            Command::new(&ip).args(["route", "del", "unreachable", &names.leaf_subnet()]),
            None,
        )?;
    }

    if let Some(dir) = dir
        && dir.join(MARKER).exists()
    {
        fs::remove_dir_all(dir).map_err(|e| TestbedError::io("remove", dir, e))?;
    }
    match fs::remove_file(state_path(names.slot)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(TestbedError::io("remove", state_path(names.slot), e))
        }
        _ => Ok(()),
    }
}

/// SIGKILLs every process in the given network namespaces until none is left (a dying sshd may
/// still fork, so it loops).
pub(crate) fn kill_all_in(ids: &[procs::NsId]) -> Result<(), TestbedError> {
    if ids.is_empty() {
        return Ok(());
    }
    let timeout = Duration::from_secs(10);
    let gone = wait_until(timeout, || {
        let pids = procs::pids_in(ids);
        for pid in &pids {
            procs::kill(*pid, libc::SIGKILL);
        }
        pids.is_empty()
    });
    if gone {
        Ok(())
    } else {
        Err(TestbedError::Timeout {
            what: format!("exit of processes {:?}", procs::pids_in(ids)),
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits_and_parse_back() {
        let n = Names { slot: 127 };
        assert!(n.leaf_veth(253).len() <= 15);
        assert_eq!(slot_of_link(&n.veth(3)), Some(127));
        assert_eq!(slot_of_link(&n.bridge()), Some(127));
        assert_eq!(slot_of_link("mt12"), None);
        assert_eq!(slot_of_link("eth0"), None);
        assert_eq!(slot_of_netns(&n.netns(5)), Some(127));
        assert_eq!(slot_of_netns("mgmt-tb12-h1"), None);
        assert!(!Names { slot: 1 }.owns_link("mt012b"));
        assert_eq!(n.leaf_subnet(), "10.213.255.0/24");
    }

    #[test]
    fn claim_round_trips() {
        let c = Claim {
            slot: 4,
            owner: Owner::Process { pid: 42, start: 7 },
            dir: PathBuf::from("/var/tmp/x y"),
        };
        let back = Claim::parse(4, &c.render()).unwrap();
        assert_eq!(back.owner, c.owner);
        assert_eq!(back.dir, c.dir);
        let p = Claim {
            owner: Owner::Persistent,
            ..c
        };
        assert_eq!(
            Claim::parse(4, &p.render()).unwrap().owner,
            Owner::Persistent
        );
    }
}
