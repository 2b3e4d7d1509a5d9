//! The same scripted sequence of etcd v3 operations, through the raw gRPC API (the generated
//! `store::pb` clients), against our embedded server and against a real etcd; the normalised
//! transcripts (revisions relative to the start, lease ids by order of appearance, no
//! cluster/member ids) must be equal.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::raw::{
    Raw, Watch, delete, op_delete, op_get, op_put, op_txn, prefix_end, prefix_range, put, range,
    range_prefix, watch_key, watch_prefix,
};
use common::{real_etcd, start_ours};
use store::pb::authpb::permission::Type as PermissionType;
use store::pb::authpb::{Permission, UserAddOptions};
use store::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use store::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use store::pb::etcdserverpb::response_op::Response as OpResponse;
use store::pb::etcdserverpb::watch_create_request::FilterType;
use store::pb::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleGetRequest,
    AuthRoleGrantPermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest, CompactionRequest, Compare,
    DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RangeResponse, ResponseOp, TxnRequest,
    WatchCreateRequest,
};
use store::pb::mvccpb::KeyValue;
use store::pb::mvccpb::event::EventType;
use tonic::Status;

const TIMEOUT: Duration = Duration::from_secs(15);

struct Transcript {
    base: i64,
    leases: HashMap<i64, usize>,
    lines: Vec<String>,
}

impl Transcript {
    fn rev(&self, r: i64) -> i64 {
        if r > 0 { r - self.base } else { r }
    }

    fn lease(&mut self, id: i64) -> String {
        if id == 0 {
            return "0".into();
        }
        let n = self.leases.len() + 1;
        format!("L{}", self.leases.entry(id).or_insert(n))
    }

    fn kv(&mut self, kv: &KeyValue) -> String {
        let lease = self.lease(kv.lease);
        format!(
            "{}={} c{} m{} v{} l{}",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            self.rev(kv.create_revision),
            self.rev(kv.mod_revision),
            kv.version,
            lease
        )
    }

    fn log(&mut self, what: &str, line: String) {
        self.lines.push(format!("{what}: {line}"));
    }

    fn err(&mut self, what: &str, s: Status) {
        self.log(what, format!("error {:?} {}", s.code(), s.message()));
    }

    /// Logs `accepted` (or `ok`) for a request whose answer does not matter, else its error.
    fn outcome<T>(&mut self, what: &str, ok: &str, r: Result<T, Status>) {
        match r {
            Ok(_) => self.log(what, ok.into()),
            Err(e) => self.err(what, e),
        }
    }

    fn get(&mut self, what: &str, r: Result<RangeResponse, Status>) {
        match r {
            Ok(resp) => {
                let kvs: Vec<String> = resp.kvs.iter().map(|kv| self.kv(kv)).collect();
                let rev = self.rev(resp.header.unwrap().revision);
                self.log(
                    what,
                    format!(
                        "rev {rev} count {} more {} [{}]",
                        resp.count,
                        resp.more,
                        kvs.join(", ")
                    ),
                );
            }
            Err(e) => self.err(what, e),
        }
    }

    fn txn_ops(&mut self, ops: Vec<ResponseOp>) -> String {
        ops.into_iter()
            .map(|op| match op.response.expect("a response per operation") {
                OpResponse::ResponsePut(p) => {
                    format!("put(prev {:?})", p.prev_kv.map(|kv| self.kv(&kv)))
                }
                OpResponse::ResponseRange(g) => {
                    let kvs: Vec<String> = g.kvs.iter().map(|kv| self.kv(kv)).collect();
                    format!("get[{}]", kvs.join(", "))
                }
                OpResponse::ResponseDeleteRange(d) => format!("delete {}", d.deleted),
                OpResponse::ResponseTxn(t) => {
                    let inner = self.txn_ops(t.responses);
                    format!("txn({} {inner})", t.succeeded)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn txn(&mut self, client: &mut Raw, what: &str, txn: TxnRequest) {
        match client.txn(txn).await {
            Ok(t) => {
                let rev = self.rev(t.header.unwrap().revision);
                let ops = self.txn_ops(t.responses);
                self.log(what, format!("rev {rev} succeeded {} [{ops}]", t.succeeded));
            }
            Err(e) => self.err(what, e),
        }
    }

    /// Reads watch responses until an event at `until` (absolute revision) arrives, or the
    /// watch is canceled; events are flattened (etcd may batch revisions differently).
    async fn watch_until(&mut self, what: &str, stream: &mut Watch, until: i64) {
        let mut out = Vec::new();
        let read = async {
            loop {
                let resp = stream
                    .message()
                    .await
                    .expect("watch stream")
                    .expect("watch open");
                if resp.canceled {
                    out.push(format!(
                        "canceled compact {} reason {:?}",
                        if resp.compact_revision > 0 {
                            resp.compact_revision - self.base
                        } else {
                            0
                        },
                        resp.cancel_reason
                    ));
                    return;
                }
                if resp.created {
                    out.push("created".to_string());
                }
                let mut done = false;
                for ev in &resp.events {
                    let kv = ev.kv.as_ref().unwrap();
                    let ty = match event_type(ev.r#type) {
                        EventType::Put => "PUT",
                        EventType::Delete => "DELETE",
                    };
                    done |= kv.mod_revision >= until;
                    let line = format!(
                        "{ty} {} prev {:?}",
                        self.kv(kv),
                        ev.prev_kv.as_ref().map(|p| self.kv(p))
                    );
                    out.push(line);
                }
                if done {
                    return;
                }
            }
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("watch events arrive in time");
        self.log(what, out.join(" | "));
    }

    /// Reads exactly `n` events; lines are sorted because etcd's order across watchers of one
    /// stream at the same revision is not defined.
    async fn watch_n(&mut self, what: &str, stream: &mut Watch, n: usize) {
        let mut out = Vec::new();
        let read = async {
            while out.len() < n {
                let resp = stream
                    .message()
                    .await
                    .expect("watch stream")
                    .expect("watch open");
                for ev in &resp.events {
                    let line = format!(
                        "watcher {} {:?} {} prev {:?}",
                        resp.watch_id,
                        event_type(ev.r#type),
                        self.kv(ev.kv.as_ref().unwrap()),
                        ev.prev_kv.as_ref().map(|p| self.kv(p))
                    );
                    out.push(line);
                }
            }
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("watch events arrive in time");
        out.sort();
        self.log(what, out.join(" | "));
    }
}

fn event_type(t: i32) -> EventType {
    EventType::try_from(t).unwrap_or_else(|_| panic!("unknown event {t}"))
}

/// A compare of `key` against `target` (the kind of comparison follows from it).
fn cmp(key: &str, result: CompareResult, target: TargetUnion) -> Compare {
    let kind = match target {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: kind as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(target),
    }
}

fn with_prev(p: PutRequest) -> PutRequest {
    PutRequest { prev_kv: true, ..p }
}

fn all_keys() -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    }
}

fn delete_prefix(prefix: &str) -> DeleteRangeRequest {
    let (key, range_end) = prefix_range(prefix.into());
    DeleteRangeRequest {
        key,
        range_end,
        ..Default::default()
    }
}

fn at_rev(key: &str, revision: i64) -> RangeRequest {
    RangeRequest {
        revision,
        ..range(key)
    }
}

fn leased(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        lease,
        ..put(key, "v")
    }
}

fn header_rev(h: Option<store::pb::etcdserverpb::ResponseHeader>) -> i64 {
    h.expect("a response header").revision
}

async fn script(url: &str) -> Vec<String> {
    let mut c = Raw::connect(url).await.unwrap();
    let base = c.revision().await.unwrap();
    let mut t = Transcript {
        base,
        leases: HashMap::new(),
        lines: Vec::new(),
    };

    // Puts and ranges.
    for (k, v) in [
        ("a", "1"),
        ("b/1", "x"),
        ("b/2", "y"),
        ("b/3", "z"),
        ("c", "3"),
    ] {
        let r = c.put(put(k, v)).await.unwrap();
        let rev = t.rev(header_rev(r.header));
        t.log("put", format!("{k} rev {rev}"));
    }
    let r = c.put(with_prev(put("a", "2"))).await.unwrap();
    let prev = r.prev_kv.map(|kv| t.kv(&kv));
    t.log("put prev_kv", format!("{prev:?}"));
    t.get("get a", c.range(range("a")).await);
    t.get("get missing", c.range(range("nope")).await);
    t.get("prefix", c.range(range_prefix("b/")).await);
    t.get(
        "limit",
        c.range(RangeRequest {
            limit: 2,
            ..range_prefix("b/")
        })
        .await,
    );
    t.get("at rev", c.range(at_rev("a", base + 1)).await);
    t.get(
        "keys only",
        c.range(RangeRequest {
            keys_only: true,
            ..range_prefix("b/")
        })
        .await,
    );
    t.get(
        "count only",
        c.range(RangeRequest {
            count_only: true,
            ..range_prefix("b/")
        })
        .await,
    );
    t.get(
        "from key",
        c.range(RangeRequest {
            range_end: vec![0],
            ..range("b/2")
        })
        .await,
    );
    t.get(
        "range",
        c.range(RangeRequest {
            range_end: b"b/2".to_vec(),
            ..range("a")
        })
        .await,
    );
    t.get("all", c.range(all_keys()).await);
    t.get(
        "sort desc",
        c.range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..range_prefix("b/")
        })
        .await,
    );
    t.get(
        "sort mod limit",
        c.range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            limit: 2,
            ..all_keys()
        })
        .await,
    );
    t.get(
        "min mod",
        c.range(RangeRequest {
            min_mod_revision: base + 4,
            ..all_keys()
        })
        .await,
    );
    t.get("future rev", c.range(at_rev("a", base + 100)).await);

    // Txns, one per compare kind, plus nesting and failure.
    use CompareResult::{Equal, Greater, Less, NotEqual};
    t.txn(
        &mut c,
        "txn value",
        TxnRequest {
            compare: vec![cmp("a", Equal, TargetUnion::Value(b"2".to_vec()))],
            success: vec![op_put(with_prev(put("t/1", "v"))), op_get(range("a"))],
            failure: vec![op_get(range("b/1"))],
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn version",
        TxnRequest {
            compare: vec![cmp("a", Greater, TargetUnion::Version(5))],
            success: vec![op_put(put("t/2", "no"))],
            failure: vec![op_get(range("a"))],
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn create",
        TxnRequest {
            compare: vec![cmp("a", Equal, TargetUnion::CreateRevision(base + 1))],
            success: vec![op_delete(DeleteRangeRequest {
                prev_kv: true,
                ..delete("b/3")
            })],
            failure: vec![],
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn mod",
        TxnRequest {
            compare: vec![cmp("c", Less, TargetUnion::ModRevision(base + 5))],
            success: vec![op_put(put("t/3", "m"))],
            failure: vec![op_put(put("t/3", "n"))],
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn lease",
        TxnRequest {
            compare: vec![
                cmp("a", Equal, TargetUnion::Lease(0)),
                cmp("a", NotEqual, TargetUnion::Value(b"x".to_vec())),
            ],
            success: vec![op_txn(TxnRequest {
                compare: vec![cmp("missing", Equal, TargetUnion::Value(Vec::new()))],
                success: vec![op_put(put("t/4", "yes"))],
                failure: vec![op_put(put("t/4", "no")), op_get(range_prefix("t/"))],
            })],
            failure: vec![],
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn prefix compare",
        TxnRequest {
            compare: vec![Compare {
                range_end: prefix_end(b"b/"),
                ..cmp("b/", Less, TargetUnion::ModRevision(base + 3))
            }],
            success: vec![op_put(put("t/5", "x"))],
            failure: vec![],
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn duplicate",
        TxnRequest {
            success: vec![op_put(put("d", "1")), op_put(put("d", "2"))],
            ..Default::default()
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn put in deleted range",
        TxnRequest {
            success: vec![op_delete(delete_prefix("t/")), op_put(put("t/9", "2"))],
            ..Default::default()
        },
    )
    .await;
    t.txn(
        &mut c,
        "txn read only",
        TxnRequest {
            success: vec![op_get(range("a"))],
            ..Default::default()
        },
    )
    .await;

    // Deletes.
    match c
        .delete(DeleteRangeRequest {
            prev_kv: true,
            ..delete_prefix("t/")
        })
        .await
    {
        Ok(d) => {
            let prev: Vec<String> = d.prev_kvs.iter().map(|kv| t.kv(kv)).collect();
            let rev = t.rev(header_rev(d.header));
            t.log(
                "delete prefix",
                format!("rev {rev} deleted {} {prev:?}", d.deleted),
            );
        }
        Err(e) => t.err("delete prefix", e),
    }
    match c.delete(delete("nope")).await {
        Ok(d) => {
            let rev = t.rev(header_rev(d.header));
            t.log("delete missing", format!("rev {rev} deleted {}", d.deleted));
        }
        Err(e) => t.err("delete missing", e),
    }
    let r = c.put(put("", "x")).await;
    t.outcome("empty key", "accepted", r);

    // A watch from the first revision, with prev_kv, replays everything so far.
    let now = c.revision().await.unwrap();
    let mut w = c
        .watch(WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: base + 1,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    t.watch_until("watch history", &mut w, now).await;
    // Live events on the same stream, and a filtered watcher.
    w.create(WatchCreateRequest {
        filters: vec![FilterType::Noput as i32],
        ..watch_prefix("b/")
    })
    .await;
    let created = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    t.log(
        "second watcher",
        format!("created {} id {}", created.created, created.watch_id),
    );
    c.put(put("b/1", "again")).await.unwrap();
    c.delete(delete("b/1")).await.unwrap();
    t.watch_n("watch live", &mut w, 3).await;
    w.request_progress().await;
    let p = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rev = t.rev(header_rev(p.header));
    t.log(
        "progress",
        format!("id {} rev {rev} events {}", p.watch_id, p.events.len()),
    );
    w.cancel(created.watch_id).await;
    let cancel = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    t.log(
        "cancel",
        format!("id {} canceled {}", cancel.watch_id, cancel.canceled),
    );

    // Leases: keys attached, time-to-live, revoke, and expiry producing delete events.
    let l1 = c
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
        .await
        .unwrap()
        .into_inner();
    let l1_name = t.lease(l1.id);
    t.log("lease grant", format!("{l1_name} ttl {}", l1.ttl));
    for k in ["l/1", "l/2"] {
        c.put(leased(k, l1.id)).await.unwrap();
    }
    let ttl = c
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: l1.id,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    // etcd keeps a lease's keys in a map: their order is not part of the API (it varies
    // between runs of the real server), so the transcript sorts them.
    let mut keys: Vec<String> = ttl
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    t.log(
        "lease ttl",
        format!(
            "granted {} keys {keys:?} alive {}",
            ttl.granted_ttl,
            ttl.ttl > 0
        ),
    );
    let leases = c
        .lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    t.log("leases", format!("{}", leases.leases.len()));
    let r = c.put(leased("l/x", 12345)).await;
    t.outcome("put unknown lease", "accepted", r);
    let l2 = c
        .lease
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .unwrap()
        .into_inner();
    c.put(leased("r/1", l2.id)).await.unwrap();
    let rv = c
        .lease
        .lease_revoke(LeaseRevokeRequest { id: l2.id })
        .await
        .unwrap()
        .into_inner();
    let rev = t.rev(header_rev(rv.header));
    t.log("lease revoke", format!("rev {rev}"));
    t.get("revoked keys", c.range(range_prefix("r/")).await);
    let r = c.lease.lease_revoke(LeaseRevokeRequest { id: l2.id }).await;
    t.outcome("revoke again", "accepted", r);
    let gone = c
        .lease
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: l2.id,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    t.log("ttl of revoked", format!("{}", gone.ttl));
    let mut keeper = c.keep_alive(l1.id).await.unwrap();
    keeper.keep_alive().await;
    let ack = keeper.message().await.unwrap().unwrap();
    let name = t.lease(ack.id);
    t.log("keepalive", format!("{name} ttl {}", ack.ttl));
    let mut lw = c.watch(watch_prefix("l/")).await.unwrap();
    let now = c.revision().await.unwrap();
    // Expiry: the next revision is the lease's deletion of both keys.
    t.watch_until("lease expiry", &mut lw, now + 1).await;
    t.get("expired keys", c.range(range_prefix("l/")).await);

    // Compaction.
    let now = c.revision().await.unwrap();
    let compact = |revision| CompactionRequest {
        revision,
        physical: false,
    };
    c.kv.compact(compact(base + 6)).await.unwrap();
    t.get("compacted rev", c.range(at_rev("a", base + 2)).await);
    t.get("at compact rev", c.range(at_rev("a", base + 6)).await);
    let r = c.kv.compact(compact(base + 3)).await;
    t.outcome("compact again", "accepted", r);
    let mut cw = c
        .watch(WatchCreateRequest {
            start_revision: base + 2,
            ..watch_key("a")
        })
        .await
        .unwrap();
    t.watch_until("watch compacted", &mut cw, now + 1000).await;

    // Auth.
    let user = |name: &str, password: &str| AuthUserAddRequest {
        name: name.into(),
        password: password.into(),
        options: Some(UserAddOptions { no_password: false }),
        ..Default::default()
    };
    let role = |name: &str| AuthRoleAddRequest { name: name.into() };
    let grant = |user: &str, role: &str| AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    };
    c.auth.user_add(user("root", "rootpw")).await.unwrap();
    c.auth.role_add(role("root")).await.unwrap();
    c.auth.user_grant_role(grant("root", "root")).await.unwrap();
    c.auth.user_add(user("alice", "alicepw")).await.unwrap();
    c.auth.role_add(role("alice-role")).await.unwrap();
    c.auth
        .role_grant_permission(AuthRoleGrantPermissionRequest {
            name: "alice-role".into(),
            perm: Some(Permission {
                perm_type: PermissionType::Readwrite as i32,
                key: b"/alice/".to_vec(),
                range_end: prefix_end(b"/alice/"),
            }),
        })
        .await
        .unwrap();
    c.auth
        .user_grant_role(grant("alice", "alice-role"))
        .await
        .unwrap();
    let r = c.auth.role_add(role("alice-role")).await;
    t.outcome("role again", "accepted", r);
    let got = c
        .auth
        .role_get(AuthRoleGetRequest {
            role: "alice-role".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let perms: Vec<String> = got
        .perm
        .iter()
        .map(|p| {
            format!(
                "{:?} {} {}",
                PermissionType::try_from(p.perm_type).ok(),
                String::from_utf8_lossy(&p.key),
                String::from_utf8_lossy(&p.range_end)
            )
        })
        .collect();
    t.log("role get", format!("{perms:?}"));
    c.auth
        .user_change_password(AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "alicepw2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let user_get = |name: &str| AuthUserGetRequest { name: name.into() };
    let alice_roles = c
        .auth
        .user_get(user_get("alice"))
        .await
        .unwrap()
        .into_inner();
    t.log("user get", format!("{:?}", alice_roles.roles));
    let r = c.auth.user_get(user_get("nobody")).await;
    t.outcome("user get unknown", "accepted", r);
    let users = c
        .auth
        .user_list(AuthUserListRequest {})
        .await
        .unwrap()
        .into_inner();
    t.log("users", format!("{:?}", users.users));
    c.auth.auth_enable(AuthEnableRequest {}).await.unwrap();
    let r = c.range(range("a")).await;
    t.outcome("no token", "accepted", r);
    let r = Raw::login(url, "mallory", "x").await;
    t.outcome("unknown user", "accepted", r);
    let r = Raw::login(url, "alice", "wrong").await;
    t.outcome("wrong password", "accepted", r);
    let r = Raw::login(url, "alice", "alicepw").await;
    t.outcome("old password", "accepted", r);
    let mut alice = Raw::login(url, "alice", "alicepw2").await.unwrap();
    let r = alice.put(put("/alice/x", "1")).await;
    t.outcome("alice own key", "ok", r);
    let r = alice.put(put("/bob/x", "1")).await;
    t.outcome("alice other key", "accepted", r);
    t.get("alice read own", alice.range(range_prefix("/alice/")).await);
    t.get("alice read all", alice.range(range_prefix("/")).await);
    match alice.watch(watch_prefix("/bob/")).await {
        Ok(mut w) => match tokio::time::timeout(TIMEOUT, w.message()).await.unwrap() {
            Ok(Some(r)) => t.log(
                "alice watch other",
                format!(
                    "created {} canceled {} id {} reason {:?}",
                    r.created, r.canceled, r.watch_id, r.cancel_reason
                ),
            ),
            Ok(None) => t.log("alice watch other", "closed".into()),
            Err(e) => t.err("alice watch other", e),
        },
        Err(e) => t.err("alice watch other", e),
    }
    let r = alice.auth.user_add(user("eve", "x")).await;
    t.outcome("alice admin", "accepted", r);
    let mut root = Raw::login(url, "root", "rootpw").await.unwrap();
    t.get("root read", root.range(range("/alice/x")).await);
    root.auth.auth_disable(AuthDisableRequest {}).await.unwrap();
    t.get("after disable", c.range(range("/alice/x")).await);

    // --max-request-bytes (1.5 MiB by default on both): a put, and a txn, past it; just under.
    let r = c.put(put("/big", vec![b'x'; 2_000_000])).await;
    t.outcome("put 2 MB", "accepted", r);
    let r = c
        .txn(TxnRequest {
            success: vec![
                op_put(put("/big/1", vec![b'x'; 1_000_000])),
                op_put(put("/big/2", vec![b'x'; 1_000_000])),
            ],
            ..Default::default()
        })
        .await;
    t.outcome("txn 2 MB", "accepted", r);
    let r = c.put(put("/big", vec![b'x'; 1_500_000])).await;
    t.outcome("put 1.5 MB", "accepted", r);
    t.get(
        "big keys",
        c.range(RangeRequest {
            keys_only: true,
            ..range_prefix("/big")
        })
        .await,
    );
    t.lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_script_same_results_as_real_etcd() {
    let ours = start_ours().await;
    let etcd = real_etcd().await;
    let url = ours.client_url();
    let theirs_url = etcd.client_url();
    let (mine, theirs) = tokio::join!(script(&url), script(&theirs_url));
    for (i, (a, b)) in mine.iter().zip(theirs.iter()).enumerate() {
        if a != b {
            eprintln!("first difference at line {i}:\n ours: {a}\n etcd: {b}");
            break;
        }
    }
    if mine != theirs {
        eprintln!("--- etcd\n{}", theirs.join("\n"));
    }
    eprintln!("--- ours\n{}", mine.join("\n"));
    assert_eq!(mine, theirs);
    assert!(mine.len() > 60, "the script ran to its end");
    ours.shutdown().await;
}
