//! The sans-IO auth store of the embedded etcd server: users, roles, key-range permissions,
//! tokens, and the permission checks etcd makes.
//!
//! It must never log or return a password or a token other than to the caller that
//! authenticated. Passwords are kept as salted SHA-256 (etcd uses bcrypt; ours live in memory for
//! one run and the remote mode uses long random per-run secrets, so a slow hash buys nothing).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest, Sha256};

use crate::error::EtcdError;
use crate::mvcc::{Quota, Span, UserQuota};
use crate::pb::authpb::{Permission, permission};

pub(crate) const ROOT: &str = "root";

#[derive(Debug)]
struct User {
    salt: [u8; 16],
    hash: [u8; 32],
    roles: BTreeSet<String>,
}

fn hash(salt: &[u8; 16], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl User {
    fn new(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self {
            salt,
            hash: hash(&salt, password),
            roles: BTreeSet::new(),
        }
    }

    fn password_matches(&self, password: &str) -> bool {
        let h = hash(&self.salt, password);
        // Constant time: no early exit on the first differing byte.
        h.iter()
            .zip(self.hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Who is calling, as established from the request's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Auth is disabled: everything is allowed.
    Anyone,
    User(String),
}

#[derive(Debug, Default)]
pub(crate) struct Auth {
    enabled: bool,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Vec<Permission>>,
    tokens: HashMap<String, String>,
    /// Users with a quota (mgmt's hosts); the others are unlimited, as in etcd.
    quotas: BTreeMap<String, Quota>,
    token_seq: u64,
    /// Bumped on every auth change, like etcd's auth revision.
    revision: u64,
}

impl Auth {
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// Maps a request's token (gRPC metadata `token`) to its caller.
    pub(crate) fn caller(&self, token: Option<&str>) -> Result<Caller, EtcdError> {
        if !self.enabled {
            return Ok(Caller::Anyone);
        }
        let token = token.ok_or(EtcdError::UserEmpty)?;
        self.tokens
            .get(token)
            .map(|u| Caller::User(u.clone()))
            .ok_or(EtcdError::InvalidAuthToken)
    }

    fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// The user `caller` is when it is limited to its own leases and held to the per-user caps
    /// on leases and watches: any user but root. `None` when it is unlimited: auth off, or root.
    pub(crate) fn limited_user(&self, caller: &Caller) -> Option<String> {
        match caller {
            Caller::User(u) if !self.is_root(u) => Some(u.clone()),
            _ => None,
        }
    }

    /// Auth administration needs the root role once auth is on.
    pub(crate) fn check_admin(&self, caller: &Caller) -> Result<(), EtcdError> {
        match caller {
            Caller::Anyone => Ok(()),
            Caller::User(u) if self.is_root(u) => Ok(()),
            Caller::User(_) => Err(EtcdError::PermissionDenied),
        }
    }

    /// Whether `caller` may read (or write) every key of `[key, end)` (etcd's range spelling).
    pub(crate) fn check(
        &self,
        caller: &Caller,
        key: &[u8],
        end: &[u8],
        write: bool,
    ) -> Result<(), EtcdError> {
        let user = match caller {
            Caller::Anyone => return Ok(()),
            Caller::User(u) => u,
        };
        if self.is_root(user) {
            return Ok(());
        }
        let Some(u) = self.users.get(user) else {
            return Err(EtcdError::PermissionDenied);
        };
        let intervals = self.intervals(u, write);
        let (start, stop) = interval(key, end);
        if covered(&intervals, start, stop) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    /// The key intervals `u`'s roles let it read (or write), sorted.
    fn intervals(&self, u: &User, write: bool) -> Vec<Span> {
        let wanted = if write {
            permission::Type::Write
        } else {
            permission::Type::Read
        };
        let mut intervals: Vec<Span> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .filter(|p| {
                p.perm_type == wanted as i32 || p.perm_type == permission::Type::Readwrite as i32
            })
            .map(|p| interval(&p.key, &p.range_end))
            .collect();
        intervals.sort();
        intervals
    }

    /// Sets `name`'s quota ([`Quota::UNLIMITED`] lifts it).
    pub(crate) fn set_quota(&mut self, name: &str, quota: Quota) -> Result<(), EtcdError> {
        if !self.users.contains_key(name) {
            return Err(EtcdError::UserNotFound);
        }
        if quota == Quota::UNLIMITED {
            self.quotas.remove(name);
        } else {
            self.quotas.insert(name.to_string(), quota);
        }
        Ok(())
    }

    /// The quota `caller` writes under, over every interval it may write (so all its writes
    /// count); `None` when it is unlimited: auth off, root, or a user without a quota.
    pub(crate) fn quota_of(&self, caller: &Caller) -> Option<UserQuota> {
        let Caller::User(user) = caller else {
            return None;
        };
        if self.is_root(user) {
            return None;
        }
        let quota = *self.quotas.get(user)?;
        let u = self.users.get(user)?;
        Some(UserQuota {
            spans: merge(self.intervals(u, true)),
            quota,
        })
    }

    pub(crate) fn enable(&mut self) -> Result<(), EtcdError> {
        let root = self.users.get(ROOT).ok_or(EtcdError::RootUserNotExist)?;
        if !root.roles.contains(ROOT) {
            return Err(EtcdError::RootRoleNotExist);
        }
        self.enabled = true;
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn disable(&mut self) {
        self.enabled = false;
        self.tokens.clear();
        self.revision += 1;
    }

    pub(crate) fn authenticate(&mut self, name: &str, password: &str) -> Result<String, EtcdError> {
        if !self.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        match self.users.get(name) {
            Some(u) if u.password_matches(password) => {}
            _ => return Err(EtcdError::AuthFailed),
        }
        self.token_seq += 1;
        let random: [u8; 16] = rand::random();
        let token = format!("{}.{}", hex::encode(random), self.token_seq);
        self.tokens.insert(token.clone(), name.to_string());
        Ok(token)
    }

    fn forget_tokens_of(&mut self, name: &str) {
        self.tokens.retain(|_, u| u != name);
    }

    pub(crate) fn user_add(&mut self, name: &str, password: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(EtcdError::UserAlreadyExist);
        }
        self.users.insert(name.to_string(), User::new(password));
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn user_delete(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(EtcdError::UserNotFound)?;
        self.quotas.remove(name);
        self.forget_tokens_of(name);
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn user_change_password(
        &mut self,
        name: &str,
        password: &str,
    ) -> Result<(), EtcdError> {
        let roles = self
            .users
            .get(name)
            .ok_or(EtcdError::UserNotFound)?
            .roles
            .clone();
        let mut user = User::new(password);
        user.roles = roles;
        self.users.insert(name.to_string(), user);
        self.forget_tokens_of(name);
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn user_roles(&self, name: &str) -> Result<Vec<String>, EtcdError> {
        self.users
            .get(name)
            .map(|u| u.roles.iter().cloned().collect())
            .ok_or(EtcdError::UserNotFound)
    }

    pub(crate) fn user_list(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    pub(crate) fn user_grant_role(&mut self, name: &str, role: &str) -> Result<(), EtcdError> {
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(EtcdError::RoleNotFound);
        }
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        user.roles.insert(role.to_string());
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn user_revoke_role(&mut self, name: &str, role: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        if !user.roles.remove(role) {
            return Err(EtcdError::RoleNotGranted);
        }
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn role_add(&mut self, name: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(EtcdError::RoleAlreadyExist);
        }
        self.roles.insert(name.to_string(), Vec::new());
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn role_delete(&mut self, name: &str) -> Result<(), EtcdError> {
        if self.enabled && name == ROOT {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(EtcdError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn role_get(&self, name: &str) -> Result<Vec<Permission>, EtcdError> {
        self.roles.get(name).cloned().ok_or(EtcdError::RoleNotFound)
    }

    pub(crate) fn role_list(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    pub(crate) fn role_grant(&mut self, name: &str, perm: Permission) -> Result<(), EtcdError> {
        let perms = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        // Granting the same range again replaces its type, as etcd does.
        match perms
            .iter_mut()
            .find(|p| p.key == perm.key && p.range_end == perm.range_end)
        {
            Some(p) => p.perm_type = perm.perm_type,
            None => perms.push(perm),
        }
        perms.sort_by(|a, b| a.key.cmp(&b.key));
        self.revision += 1;
        Ok(())
    }

    pub(crate) fn role_revoke(
        &mut self,
        name: &str,
        key: &[u8],
        end: &[u8],
    ) -> Result<(), EtcdError> {
        let perms = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        let before = perms.len();
        perms.retain(|p| !(p.key == key && p.range_end == end));
        if perms.len() == before {
            return Err(EtcdError::PermissionNotGranted);
        }
        self.revision += 1;
        Ok(())
    }
}

/// `[start, stop)` with `None` = unbounded; a single key `k` is `[k, k\0)`.
fn interval(key: &[u8], end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if end.is_empty() {
        let mut next = key.to_vec();
        next.push(0);
        (key.to_vec(), Some(next))
    } else if end == [0] {
        (key.to_vec(), None)
    } else {
        (key.to_vec(), Some(end.to_vec()))
    }
}

/// Sorted intervals with the overlapping and adjacent ones joined.
fn merge(sorted: Vec<Span>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        if let Some((_, last_hi)) = out.last_mut() {
            match last_hi {
                None => continue,
                Some(h) if *h >= lo => {
                    match &hi {
                        None => *last_hi = None,
                        Some(new) if new > h => *h = new.clone(),
                        Some(_) => {}
                    }
                    continue;
                }
                Some(_) => {}
            }
        }
        out.push((lo, hi));
    }
    out
}

/// Whether sorted `intervals` together cover `[start, stop)`.
fn covered(
    intervals: &[(Vec<u8>, Option<Vec<u8>>)],
    start: Vec<u8>,
    stop: Option<Vec<u8>>,
) -> bool {
    if let Some(s) = &stop
        && *s <= start
    {
        return true;
    }
    let mut reached = start;
    for (lo, hi) in intervals {
        if *lo > reached {
            break;
        }
        match hi {
            None => return true,
            Some(hi) if *hi > reached => reached = hi.clone(),
            Some(_) => {}
        }
        if let Some(s) = &stop
            && reached >= *s
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: permission::Type, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.into(),
            range_end: end.into(),
        }
    }

    #[test]
    fn prefix_user_is_limited_to_its_prefix() {
        let mut a = Auth::default();
        a.user_add("root", "rootpw").unwrap();
        assert_eq!(a.enable(), Err(EtcdError::RootRoleNotExist));
        a.role_add("root").unwrap();
        a.user_grant_role("root", "root").unwrap();
        a.user_add("h1", "pw").unwrap();
        a.role_add("h1").unwrap();
        a.role_grant("h1", perm(permission::Type::Readwrite, "/a/", "/a0"))
            .unwrap();
        a.role_grant("h1", perm(permission::Type::Read, "/b", ""))
            .unwrap();
        a.user_grant_role("h1", "h1").unwrap();
        a.enable().unwrap();
        assert_eq!(a.authenticate("h1", "bad"), Err(EtcdError::AuthFailed));
        assert_eq!(a.authenticate("nobody", "pw"), Err(EtcdError::AuthFailed));
        let t = a.authenticate("h1", "pw").unwrap();
        let c = a.caller(Some(&t)).unwrap();
        assert_eq!(a.caller(None), Err(EtcdError::UserEmpty));
        assert_eq!(a.caller(Some("x.1")), Err(EtcdError::InvalidAuthToken));
        assert!(a.check(&c, b"/a/x", b"", true).is_ok());
        assert!(a.check(&c, b"/a/", b"/a0", false).is_ok());
        assert!(a.check(&c, b"/b", b"", false).is_ok());
        assert_eq!(
            a.check(&c, b"/b", b"", true),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(
            a.check(&c, b"/a", b"/b", false),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(
            a.check(&c, b"/c", b"", false),
            Err(EtcdError::PermissionDenied)
        );
        assert_eq!(a.check_admin(&c), Err(EtcdError::PermissionDenied));
        let r = a.authenticate("root", "rootpw").unwrap();
        let root = a.caller(Some(&r)).unwrap();
        assert!(a.check(&root, b"\0", b"\0", true).is_ok());
        // Every user but root is limited to its own leases and held to the caps.
        assert_eq!(a.limited_user(&c), Some("h1".to_string()));
        assert_eq!(a.limited_user(&root), None);
        assert_eq!(a.limited_user(&Caller::Anyone), None);

        // Quotas: per user, over every interval it may write; root and the rest unlimited.
        assert_eq!(a.quota_of(&c), None);
        assert_eq!(
            a.set_quota("nobody", Quota::HOST),
            Err(EtcdError::UserNotFound)
        );
        a.role_grant("h1", perm(permission::Type::Write, "/a0", "/a1"))
            .unwrap();
        a.role_grant("h1", perm(permission::Type::Write, "/z", ""))
            .unwrap();
        a.set_quota("h1", Quota::HOST).unwrap();
        let q = a.quota_of(&c).unwrap();
        assert_eq!(q.quota, Quota::HOST);
        assert_eq!(
            q.spans,
            vec![
                (b"/a/".to_vec(), Some(b"/a1".to_vec())),
                (b"/z".to_vec(), Some(b"/z\0".to_vec())),
            ]
        );
        a.set_quota("root", Quota::HOST).unwrap();
        assert_eq!(a.quota_of(&root), None);
        a.set_quota("h1", Quota::UNLIMITED).unwrap();
        assert_eq!(a.quota_of(&c), None);
    }

    #[test]
    fn merge_joins_overlapping_intervals() {
        let span = |lo: &str, hi: Option<&str>| {
            (lo.as_bytes().to_vec(), hi.map(|h| h.as_bytes().to_vec()))
        };
        assert_eq!(
            merge(vec![
                span("a", Some("c")),
                span("b", Some("d")),
                span("d", Some("e")),
                span("f", Some("g")),
                span("g", None),
                span("h", Some("i")),
            ]),
            vec![span("a", Some("e")), span("f", None)]
        );
    }
}
