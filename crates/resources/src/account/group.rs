//! `group`: a local group (mgmt's group resource and its field names, plus `system` and
//! `members`).
//!
//! - check: `/etc/group` parsed in-process; only the fields given are compared.
//! - apply: one `groupadd` (with its members: `--users`), one `groupmod` with what differs
//!   (an empty member list through `gpasswd --members ''`), or `groupdel`.
//! - watch: `watch.rs`.

use std::sync::Arc;

use async_trait::async_trait;
use resource::{
    ApplyCtx, BuildError, KindInfo, Meta, Mode, Outcome, Resource, ResourceError, Uid, WatchCtx,
};
use serde_json::{Map, Value};

use super::db::{Db, etc};
use super::{State, TOOLS, check_name, names, read_db, run, watch};
use crate::params::{Params, bad, invalid_to_build, put_opt};

pub const FIELDS: &[&str] = &["state", "gid", "system", "members"];

pub const KIND: KindInfo = KindInfo {
    kind: "group",
    fields: FIELDS,
    build,
};

/// One group's parameters, canonical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub state: State,
    pub gid: Option<u32>,
    /// Made as a system group (only when created).
    pub system: bool,
    /// Exactly these members, sorted; `None`: not managed.
    pub members: Option<Vec<String>>,
}

impl GroupSpec {
    pub fn from_params(name: &str, params: Value) -> Result<GroupSpec, BuildError> {
        let mut p = Params::new("group", params, FIELDS)?;
        let state = State::parse("state", p.string("state")?.as_deref())?;
        let gid = p
            .uint("gid")?
            .map(|n| u32::try_from(n).map_err(|_| bad("gid", format!("{n} is not a valid id"))))
            .transpose()?;
        let spec = GroupSpec {
            name: name.to_string(),
            state,
            gid,
            system: p.boolean("system")?,
            members: names("members", "user", p.take("members"))?,
        };
        spec.validate().map_err(invalid_to_build)?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), ResourceError> {
        check_name("group", &self.name).map_err(|e| ResourceError::invalid("name", e))?;
        for m in self.members.iter().flatten() {
            check_name("user", m).map_err(|e| ResourceError::invalid("members", e))?;
        }
        Ok(())
    }

    pub fn to_params(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("state".into(), self.state.as_str().into());
        put_opt(&mut map, "gid", &self.gid);
        if self.system {
            map.insert("system".into(), true.into());
        }
        put_opt(&mut map, "members", &self.members);
        map
    }
}

/// The commands that bring the group to its state (none: in sync), and what differs. Pure.
pub(crate) fn plan(spec: &GroupSpec, db: &Db) -> Result<(Vec<Vec<String>>, Vec<String>), String> {
    let s = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    let now = db.group(&spec.name);
    let name = spec.name.as_str();
    if spec.state == State::Absent {
        return Ok(match now {
            Some(_) => (vec![s(&["groupdel", "--", name])], vec!["exists".into()]),
            None => (Vec::new(), Vec::new()),
        });
    }
    if let Some(gid) = spec.gid
        && let Some(other) = db.group_by_gid(gid).filter(|g| g.name != spec.name)
    {
        return Err(format!("gid {gid} belongs to group `{}`", other.name));
    }
    let mut why = Vec::new();
    let mut argv = Vec::new();
    let members = spec.members.as_ref().map(|m| m.join(","));
    match now {
        None => {
            why.push("does not exist".into());
            argv.push("groupadd".into());
            if let Some(gid) = spec.gid {
                argv.extend(s(&["--gid", &gid.to_string()]));
            }
            if spec.system {
                argv.push("--system".into());
            }
            if let Some(m) = members.filter(|m| !m.is_empty()) {
                argv.extend(s(&["--users", &m]));
            }
            argv.extend(s(&["--", name]));
            Ok((vec![argv], why))
        }
        Some(g) => {
            let mut cmds = Vec::new();
            if let Some(gid) = spec.gid.filter(|gid| *gid != g.gid) {
                why.push(format!("gid {} -> {gid}", g.gid));
                argv.extend(s(&["--gid", &gid.to_string()]));
            }
            if let Some(want) = &spec.members {
                let mut have = g.members.clone();
                have.sort();
                have.dedup();
                if *want != have {
                    why.push(format!(
                        "members [{}] -> [{}]",
                        have.join(","),
                        want.join(",")
                    ));
                    if want.is_empty() {
                        // groupmod cannot empty the list; gpasswd can.
                        cmds.push(s(&["gpasswd", "--members", "", "--", name]));
                    } else {
                        argv.extend(s(&["--users", &want.join(",")]));
                    }
                }
            }
            if !argv.is_empty() {
                let mut cmd = s(&["groupmod"]);
                cmd.append(&mut argv);
                cmd.extend(s(&["--", name]));
                cmds.insert(0, cmd);
            }
            Ok((cmds, why))
        }
    }
}

/// One group vertex.
#[derive(Debug)]
pub struct Group {
    meta: Meta,
    spec: GroupSpec,
}

impl Group {
    pub fn spec(&self) -> &GroupSpec {
        &self.spec
    }
}

fn build(name: &str, params: Value, meta: Meta) -> Result<Arc<dyn Resource>, BuildError> {
    let spec = GroupSpec::from_params(name, params)?;
    Ok(Arc::new(Group { meta, spec }))
}

impl Group {
    async fn plan(&self) -> Result<(Vec<Vec<String>>, Vec<String>), ResourceError> {
        let db = read_db(false).await?;
        plan(&self.spec, &db).map_err(ResourceError::failed)
    }
}

#[async_trait]
impl Resource for Group {
    fn kind(&self) -> &'static str {
        "group"
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn validate(&self) -> Result<(), ResourceError> {
        self.spec.validate()
    }

    fn params(&self) -> Value {
        Value::Object(self.spec.to_params())
    }

    /// The group by name (and gid), which the users naming it depend on.
    fn uids(&self) -> Vec<Uid> {
        let mut uids = vec![Uid {
            kind: "group",
            key: self.spec.name.clone(),
        }];
        if let Some(gid) = self.spec.gid {
            uids.push(Uid {
                kind: "group",
                key: format!("gid:{gid}"),
            });
        }
        uids
    }

    /// A group being removed waits for the users being removed that name it.
    fn auto_edges(&self) -> Vec<Uid> {
        match self.spec.state {
            State::Absent => vec![Uid {
                kind: "user",
                key: format!("member:{}", self.spec.name),
            }],
            State::Exists => Vec::new(),
        }
    }

    async fn watch(&self, ctx: WatchCtx) -> Result<(), ResourceError> {
        watch::watch(&etc(), ctx, |_| {}).await
    }

    async fn check_apply(&self, _ctx: &ApplyCtx, mode: Mode) -> Result<Outcome, ResourceError> {
        let _turn = match mode {
            Mode::Apply => Some(TOOLS.lock().await),
            Mode::Check => None,
        };
        let (cmds, why) = self.plan().await?;
        if cmds.is_empty() {
            return Ok(Outcome::InSync);
        }
        let why = why.join(", ");
        if mode == Mode::Check {
            tracing::info!("would change group {}: {why}", self.spec.name);
            return Ok(Outcome::WouldChange);
        }
        tracing::info!("group {}: {why}", self.spec.name);
        for argv in &cmds {
            run(argv, None).await?;
        }
        let (left, why) = self.plan().await?;
        if !left.is_empty() {
            return Err(ResourceError::failed(format!(
                "group {}: the tools succeeded but this still differs: {}",
                self.spec.name,
                why.join(", ")
            )));
        }
        Ok(Outcome::Changed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::db::{parse_group, parse_passwd};
    use super::*;

    fn db(group: &str) -> Db {
        Db {
            passwd: parse_passwd("passwd".as_ref(), "a:x:1000:1000::/home/a:/bin/sh\n").unwrap(),
            group: parse_group("group".as_ref(), group).unwrap(),
            shadow: None,
        }
    }

    fn spec(params: Value) -> GroupSpec {
        GroupSpec::from_params("web", params).unwrap()
    }

    fn cmds(spec: &GroupSpec, db: &Db) -> Vec<String> {
        plan(spec, db)
            .unwrap()
            .0
            .iter()
            .map(|c| c.join(" "))
            .collect()
    }

    #[test]
    fn params_round_trip_through_build() {
        for p in [
            json!({"state": "exists", "gid": 1500, "system": true, "members": ["b", "a"]}),
            json!({"state": "absent"}),
            json!({"members": []}),
            json!(null),
        ] {
            let built = spec(p.clone());
            let again = spec(Value::Object(built.to_params()));
            assert_eq!(built, again, "{p}");
        }
        assert_eq!(
            Value::Object(spec(json!({"members": ["b", "a", "b"], "gid": "7"})).to_params()),
            json!({"state": "exists", "gid": 7, "members": ["a", "b"]})
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        for (params, field, why) in [
            (
                json!({"state": "present"}),
                "state",
                "expected `exists` or `absent`",
            ),
            (json!({"gid": -1}), "gid", "non-negative integer"),
            (json!({"gid": 5_000_000_000u64}), "gid", "is not a valid id"),
            (
                json!({"members": ["-r"]}),
                "members",
                "must not start with `-`",
            ),
            (
                json!({"members": "a,b"}),
                "members",
                "expected a list of names",
            ),
            (json!({"bogus": 1}), "bogus", "unknown field"),
        ] {
            let e = GroupSpec::from_params("web", params.clone()).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{params}");
            assert!(e.message.contains(why), "{params}: {}", e.message);
        }
        let e = GroupSpec::from_params("-web", Value::Null).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
    }

    #[test]
    fn plans_create_change_and_remove_with_names_after_double_dash() {
        let none = db("root:x:0:\n");
        assert_eq!(
            cmds(
                &spec(json!({"gid": 1500, "system": true, "members": ["a"]})),
                &none
            ),
            ["groupadd --gid 1500 --system --users a -- web"]
        );
        assert_eq!(cmds(&spec(json!({})), &none), ["groupadd -- web"]);
        let some = db("web:x:1400:b,a\n");
        assert!(cmds(&spec(json!({"members": ["a", "b"]})), &some).is_empty());
        assert!(cmds(&spec(json!({})), &some).is_empty());
        assert_eq!(
            cmds(&spec(json!({"gid": 1500, "members": ["a"]})), &some),
            ["groupmod --gid 1500 --users a -- web"]
        );
        assert_eq!(
            cmds(&spec(json!({"members": []})), &some),
            ["gpasswd --members  -- web"]
        );
        assert_eq!(
            cmds(&spec(json!({"state": "absent"})), &some),
            ["groupdel -- web"]
        );
        assert!(cmds(&spec(json!({"state": "absent"})), &none).is_empty());
        let taken = db("other:x:1500:\n");
        assert_eq!(
            plan(&spec(json!({"gid": 1500})), &taken).unwrap_err(),
            "gid 1500 belongs to group `other`"
        );
    }

    #[test]
    fn uids_and_edges() {
        let g = Group {
            meta: Meta::default(),
            spec: spec(json!({"gid": 9})),
        };
        let keys: Vec<String> = g.uids().into_iter().map(|u| u.key).collect();
        assert_eq!(keys, ["web", "gid:9"]);
        assert!(g.auto_edges().is_empty());
        let g = Group {
            meta: Meta::default(),
            spec: spec(json!({"state": "absent"})),
        };
        assert_eq!(g.auto_edges()[0].key, "member:web");
    }
}
