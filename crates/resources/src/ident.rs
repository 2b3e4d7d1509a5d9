//! Resolve user and group names (or numeric ids) to ids, for `file` ownership and `exec`'s
//! run-as. Reads the system's user database at apply time; never at build time.

use nix::unistd::{Group, User};
use resource::ResourceError;

/// A uid from a user name or a numeric id.
pub(crate) fn uid(user: &str) -> Result<u32, ResourceError> {
    if let Ok(id) = user.parse::<u32>() {
        return Ok(id);
    }
    Ok(lookup_user(user)?.uid.as_raw())
}

/// The primary gid of a user given by name or numeric id (when it has an entry).
pub(crate) fn primary_gid(user: &str) -> Result<Option<u32>, ResourceError> {
    let found = match user.parse::<u32>() {
        Ok(id) => User::from_uid(id.into())
            .map_err(|e| ResourceError::failed(format!("looking up uid {id}: {e}")))?,
        Err(_) => Some(lookup_user(user)?),
    };
    Ok(found.map(|u| u.gid.as_raw()))
}

/// A gid from a group name or a numeric id.
pub(crate) fn gid(group: &str) -> Result<u32, ResourceError> {
    if let Ok(id) = group.parse::<u32>() {
        return Ok(id);
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(ResourceError::failed(format!("unknown group `{group}`"))),
        Err(e) => Err(ResourceError::failed(format!(
            "looking up group `{group}`: {e}"
        ))),
    }
}

fn lookup_user(user: &str) -> Result<User, ResourceError> {
    match User::from_name(user) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(ResourceError::failed(format!("unknown user `{user}`"))),
        Err(e) => Err(ResourceError::failed(format!(
            "looking up user `{user}`: {e}"
        ))),
    }
}
