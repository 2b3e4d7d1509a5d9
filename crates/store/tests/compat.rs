//! The same scripted sequence of etcd v3 operations, through the `etcd-client` crate, against our
//! embedded server and against a real etcd; the normalised transcripts (revisions relative to
//! the start, lease ids by order of appearance, no cluster/member ids) must be equal.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{real_etcd, start_ours};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Error, EventType, GetOptions,
    GetResponse, KeyValue, Permission, PermissionType, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};

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
        let lease = self.lease(kv.lease());
        format!(
            "{}={} c{} m{} v{} l{}",
            String::from_utf8_lossy(kv.key()),
            String::from_utf8_lossy(kv.value()),
            self.rev(kv.create_revision()),
            self.rev(kv.mod_revision()),
            kv.version(),
            lease
        )
    }

    fn log(&mut self, what: &str, line: String) {
        self.lines.push(format!("{what}: {line}"));
    }

    fn err(&mut self, what: &str, e: Error) {
        let line = match e {
            Error::GRpcStatus(s) => format!("error {:?} {}", s.code(), s.message()),
            other => format!("error {other}"),
        };
        self.log(what, line);
    }

    fn get(&mut self, what: &str, r: Result<GetResponse, Error>) {
        match r {
            Ok(resp) => {
                let kvs: Vec<String> = resp.kvs().iter().map(|kv| self.kv(kv)).collect();
                let rev = self.rev(resp.header().unwrap().revision());
                self.log(
                    what,
                    format!(
                        "rev {rev} count {} more {} [{}]",
                        resp.count(),
                        resp.more(),
                        kvs.join(", ")
                    ),
                );
            }
            Err(e) => self.err(what, e),
        }
    }

    fn txn_ops(&mut self, ops: Vec<TxnOpResponse>) -> String {
        ops.into_iter()
            .map(|op| match op {
                TxnOpResponse::Put(p) => {
                    let prev = p.prev_key().cloned();
                    format!("put(prev {:?})", prev.map(|kv| self.kv(&kv)))
                }
                TxnOpResponse::Get(g) => {
                    let kvs: Vec<String> = g.kvs().iter().map(|kv| self.kv(kv)).collect();
                    format!("get[{}]", kvs.join(", "))
                }
                TxnOpResponse::Delete(d) => format!("delete {}", d.deleted()),
                TxnOpResponse::Txn(t) => {
                    let inner = self.txn_ops(t.op_responses());
                    format!("txn({} {inner})", t.succeeded())
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn txn(&mut self, client: &mut Client, what: &str, txn: Txn) {
        match client.txn(txn).await {
            Ok(t) => {
                let rev = self.rev(t.header().unwrap().revision());
                let ops = self.txn_ops(t.op_responses());
                self.log(
                    what,
                    format!("rev {rev} succeeded {} [{ops}]", t.succeeded()),
                );
            }
            Err(e) => self.err(what, e),
        }
    }

    /// Reads watch responses until an event at `until` (absolute revision) arrives, or the
    /// watch is canceled; events are flattened (etcd may batch revisions differently).
    async fn watch_until(&mut self, what: &str, stream: &mut WatchStream, until: i64) {
        let mut out = Vec::new();
        let read = async {
            loop {
                let resp = stream
                    .message()
                    .await
                    .expect("watch stream")
                    .expect("watch open");
                if resp.canceled() {
                    out.push(format!(
                        "canceled compact {} reason {:?}",
                        if resp.compact_revision() > 0 {
                            resp.compact_revision() - self.base
                        } else {
                            0
                        },
                        resp.cancel_reason()
                    ));
                    return;
                }
                if resp.created() {
                    out.push("created".to_string());
                }
                let mut done = false;
                for ev in resp.events() {
                    let kv = ev.kv().unwrap();
                    let ty = match ev.event_type() {
                        EventType::Put => "PUT",
                        EventType::Delete => "DELETE",
                    };
                    done |= kv.mod_revision() >= until;
                    let (kv, prev) = (kv.clone(), ev.prev_kv().cloned());
                    let line =
                        format!("{ty} {} prev {:?}", self.kv(&kv), prev.map(|p| self.kv(&p)));
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
}

impl Transcript {
    /// Reads exactly `n` events; lines are sorted because etcd's order across watchers of one
    /// stream at the same revision is not defined.
    async fn watch_n(&mut self, what: &str, stream: &mut WatchStream, n: usize) {
        let mut out = Vec::new();
        let read = async {
            while out.len() < n {
                let resp = stream
                    .message()
                    .await
                    .expect("watch stream")
                    .expect("watch open");
                for ev in resp.events() {
                    let kv = ev.kv().unwrap().clone();
                    let prev = ev.prev_kv().cloned();
                    let line = format!(
                        "watcher {} {:?} {} prev {:?}",
                        resp.watch_id(),
                        ev.event_type(),
                        self.kv(&kv),
                        prev.map(|p| self.kv(&p))
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

async fn script(url: &str) -> Vec<String> {
    let mut c = Client::connect([url], None).await.unwrap();
    let base = c.get("x", None).await.unwrap().header().unwrap().revision();
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
        let r = c.put(k, v, None).await.unwrap();
        let rev = t.rev(r.header().unwrap().revision());
        t.log("put", format!("{k} rev {rev}"));
    }
    let r = c
        .put("a", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    let prev = r.prev_key().cloned().map(|kv| t.kv(&kv));
    t.log("put prev_kv", format!("{prev:?}"));
    t.get("get a", c.get("a", None).await);
    t.get("get missing", c.get("nope", None).await);
    t.get(
        "prefix",
        c.get("b/", Some(GetOptions::new().with_prefix())).await,
    );
    t.get(
        "limit",
        c.get("b/", Some(GetOptions::new().with_prefix().with_limit(2)))
            .await,
    );
    t.get(
        "at rev",
        c.get("a", Some(GetOptions::new().with_revision(base + 1)))
            .await,
    );
    t.get(
        "keys only",
        c.get("b/", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await,
    );
    t.get(
        "count only",
        c.get(
            "b/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await,
    );
    t.get(
        "from key",
        c.get("b/2", Some(GetOptions::new().with_from_key())).await,
    );
    t.get(
        "range",
        c.get("a", Some(GetOptions::new().with_range("b/2"))).await,
    );
    t.get(
        "all",
        c.get("", Some(GetOptions::new().with_all_keys())).await,
    );
    t.get(
        "sort desc",
        c.get(
            "b/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await,
    );
    t.get(
        "sort mod limit",
        c.get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await,
    );
    t.get(
        "min mod",
        c.get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_min_mod_revision(base + 4),
            ),
        )
        .await,
    );
    t.get(
        "future rev",
        c.get("a", Some(GetOptions::new().with_revision(base + 100)))
            .await,
    );

    // Txns, one per compare kind, plus nesting and failure.
    t.txn(
        &mut c,
        "txn value",
        Txn::new()
            .when([Compare::value("a", CompareOp::Equal, "2")])
            .and_then([
                TxnOp::put("t/1", "v", Some(PutOptions::new().with_prev_key())),
                TxnOp::get("a", None),
            ])
            .or_else([TxnOp::get("b/1", None)]),
    )
    .await;
    t.txn(
        &mut c,
        "txn version",
        Txn::new()
            .when([Compare::version("a", CompareOp::Greater, 5)])
            .and_then([TxnOp::put("t/2", "no", None)])
            .or_else([TxnOp::get("a", None)]),
    )
    .await;
    t.txn(
        &mut c,
        "txn create",
        Txn::new()
            .when([Compare::create_revision("a", CompareOp::Equal, base + 1)])
            .and_then([TxnOp::delete(
                "b/3",
                Some(DeleteOptions::new().with_prev_key()),
            )]),
    )
    .await;
    t.txn(
        &mut c,
        "txn mod",
        Txn::new()
            .when([Compare::mod_revision("c", CompareOp::Less, base + 5)])
            .and_then([TxnOp::put("t/3", "m", None)])
            .or_else([TxnOp::put("t/3", "n", None)]),
    )
    .await;
    t.txn(
        &mut c,
        "txn lease",
        Txn::new()
            .when([
                Compare::lease("a", CompareOp::Equal, 0),
                Compare::value("a", CompareOp::NotEqual, "x"),
            ])
            .and_then([TxnOp::txn(
                Txn::new()
                    .when([Compare::value("missing", CompareOp::Equal, "")])
                    .and_then([TxnOp::put("t/4", "yes", None)])
                    .or_else([
                        TxnOp::put("t/4", "no", None),
                        TxnOp::get("t/", Some(GetOptions::new().with_prefix())),
                    ]),
            )]),
    )
    .await;
    t.txn(
        &mut c,
        "txn prefix compare",
        Txn::new()
            .when([Compare::mod_revision("b/", CompareOp::Less, base + 3).with_prefix()])
            .and_then([TxnOp::put("t/5", "x", None)]),
    )
    .await;
    t.txn(
        &mut c,
        "txn duplicate",
        Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]),
    )
    .await;
    t.txn(
        &mut c,
        "txn put in deleted range",
        Txn::new().and_then([
            TxnOp::delete("t/", Some(DeleteOptions::new().with_prefix())),
            TxnOp::put("t/9", "2", None),
        ]),
    )
    .await;
    t.txn(
        &mut c,
        "txn read only",
        Txn::new().and_then([TxnOp::get("a", None)]),
    )
    .await;

    // Deletes.
    match c
        .delete(
            "t/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
    {
        Ok(d) => {
            let prev: Vec<String> = d.prev_kvs().iter().map(|kv| t.kv(kv)).collect();
            let rev = t.rev(d.header().unwrap().revision());
            t.log(
                "delete prefix",
                format!("rev {rev} deleted {} {prev:?}", d.deleted()),
            );
        }
        Err(e) => t.err("delete prefix", e),
    }
    match c.delete("nope", None).await {
        Ok(d) => {
            let rev = t.rev(d.header().unwrap().revision());
            t.log(
                "delete missing",
                format!("rev {rev} deleted {}", d.deleted()),
            );
        }
        Err(e) => t.err("delete missing", e),
    }
    match c.put("", "x", None).await {
        Ok(_) => t.log("empty key", "accepted".into()),
        Err(e) => t.err("empty key", e),
    }

    // A watch from the first revision, with prev_kv, replays everything so far.
    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    let mut w = c
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(base + 1)
                    .with_prev_key(),
            ),
        )
        .await
        .unwrap();
    t.watch_until("watch history", &mut w, now).await;
    // Live events on the same stream, and a filtered watcher.
    w.watch(
        "b/",
        Some(
            WatchOptions::new()
                .with_prefix()
                .with_filters([etcd_client::WatchFilterType::NoPut]),
        ),
    )
    .await
    .unwrap();
    let created = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    t.log(
        "second watcher",
        format!("created {} id {}", created.created(), created.watch_id()),
    );
    c.put("b/1", "again", None).await.unwrap();
    let r = c.delete("b/1", None).await.unwrap();
    let del_rev = r.header().unwrap().revision();
    let _ = del_rev;
    t.watch_n("watch live", &mut w, 3).await;
    w.request_progress().await.unwrap();
    let p = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rev = t.rev(p.header().unwrap().revision());
    t.log(
        "progress",
        format!("id {} rev {rev} events {}", p.watch_id(), p.events().len()),
    );
    w.cancel(created.watch_id()).await.unwrap();
    let cancel = tokio::time::timeout(TIMEOUT, w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    t.log(
        "cancel",
        format!("id {} canceled {}", cancel.watch_id(), cancel.canceled()),
    );

    // Leases: keys attached, time-to-live, revoke, and expiry producing delete events.
    let l1 = c.lease_grant(2, None).await.unwrap();
    let l1_name = t.lease(l1.id());
    t.log("lease grant", format!("{l1_name} ttl {}", l1.ttl()));
    for k in ["l/1", "l/2"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(l1.id())))
            .await
            .unwrap();
    }
    let ttl = c
        .lease_time_to_live(
            l1.id(),
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    // etcd keeps a lease's keys in a map: their order is not part of the API (it varies
    // between runs of the real server), so the transcript sorts them.
    let mut keys: Vec<String> = ttl
        .keys()
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    t.log(
        "lease ttl",
        format!(
            "granted {} keys {keys:?} alive {}",
            ttl.granted_ttl(),
            ttl.ttl() > 0
        ),
    );
    let leases = c.leases().await.unwrap();
    t.log("leases", format!("{}", leases.leases().len()));
    match c
        .put("l/x", "v", Some(PutOptions::new().with_lease(12345)))
        .await
    {
        Ok(_) => t.log("put unknown lease", "accepted".into()),
        Err(e) => t.err("put unknown lease", e),
    }
    let l2 = c.lease_grant(30, None).await.unwrap();
    c.put("r/1", "v", Some(PutOptions::new().with_lease(l2.id())))
        .await
        .unwrap();
    let rv = c.lease_revoke(l2.id()).await.unwrap();
    let rev = t.rev(rv.header().unwrap().revision());
    t.log("lease revoke", format!("rev {rev}"));
    t.get(
        "revoked keys",
        c.get("r/", Some(GetOptions::new().with_prefix())).await,
    );
    match c.lease_revoke(l2.id()).await {
        Ok(_) => t.log("revoke again", "accepted".into()),
        Err(e) => t.err("revoke again", e),
    }
    let gone = c.lease_time_to_live(l2.id(), None).await.unwrap();
    t.log("ttl of revoked", format!("{}", gone.ttl()));
    let (mut keeper, mut acks) = c.lease_keep_alive(l1.id()).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    let name = t.lease(ack.id());
    t.log("keepalive", format!("{name} ttl {}", ack.ttl()));
    let mut lw = c
        .watch("l/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    // Expiry: the next revision is the lease's deletion of both keys.
    t.watch_until("lease expiry", &mut lw, now + 1).await;
    t.get(
        "expired keys",
        c.get("l/", Some(GetOptions::new().with_prefix())).await,
    );

    // Compaction.
    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    c.compact(base + 6, None).await.unwrap();
    t.get(
        "compacted rev",
        c.get("a", Some(GetOptions::new().with_revision(base + 2)))
            .await,
    );
    t.get(
        "at compact rev",
        c.get("a", Some(GetOptions::new().with_revision(base + 6)))
            .await,
    );
    match c.compact(base + 3, None).await {
        Ok(_) => t.log("compact again", "accepted".into()),
        Err(e) => t.err("compact again", e),
    }
    let mut cw = c
        .watch("a", Some(WatchOptions::new().with_start_revision(base + 2)))
        .await
        .unwrap();
    t.watch_until("watch compacted", &mut cw, now + 1000).await;

    // Auth.
    c.user_add("root", "rootpw", None).await.unwrap();
    c.role_add("root").await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.user_add("alice", "alicepw", None).await.unwrap();
    c.role_add("alice-role").await.unwrap();
    c.role_grant_permission(
        "alice-role",
        Permission::read_write("/alice/").with_prefix(),
    )
    .await
    .unwrap();
    c.user_grant_role("alice", "alice-role").await.unwrap();
    match c.role_add("alice-role").await {
        Ok(_) => t.log("role again", "accepted".into()),
        Err(e) => t.err("role again", e),
    }
    let role = c.role_get("alice-role").await.unwrap();
    let perms: Vec<String> = role
        .permissions()
        .iter()
        .map(|p| {
            format!(
                "{:?} {} {}",
                PermissionType::try_from(p.get_type()).ok(),
                String::from_utf8_lossy(p.key()),
                String::from_utf8_lossy(p.range_end())
            )
        })
        .collect();
    t.log("role get", format!("{perms:?}"));
    c.user_change_password("alice", "alicepw2").await.unwrap();
    let alice_roles = c.user_get("alice").await.unwrap();
    t.log("user get", format!("{:?}", alice_roles.roles()));
    match c.user_get("nobody").await {
        Ok(_) => t.log("user get unknown", "accepted".into()),
        Err(e) => t.err("user get unknown", e),
    }
    let users = c.user_list().await.unwrap();
    t.log("users", format!("{:?}", users.users()));
    c.auth_enable().await.unwrap();
    match c.get("a", None).await {
        Ok(_) => t.log("no token", "accepted".into()),
        Err(e) => t.err("no token", e),
    }
    let login = |u: &str, p: &str| {
        let url = url.to_string();
        let opts = ConnectOptions::new().with_user(u, p);
        async move { Client::connect([url], Some(opts)).await }
    };
    match login("mallory", "x").await {
        Ok(_) => t.log("unknown user", "accepted".into()),
        Err(e) => t.err("unknown user", e),
    }
    match login("alice", "wrong").await {
        Ok(_) => t.log("wrong password", "accepted".into()),
        Err(e) => t.err("wrong password", e),
    }
    match login("alice", "alicepw").await {
        Ok(_) => t.log("old password", "accepted".into()),
        Err(e) => t.err("old password", e),
    }
    let mut alice = login("alice", "alicepw2").await.unwrap();
    match alice.put("/alice/x", "1", None).await {
        Ok(_) => t.log("alice own key", "ok".into()),
        Err(e) => t.err("alice own key", e),
    }
    match alice.put("/bob/x", "1", None).await {
        Ok(_) => t.log("alice other key", "accepted".into()),
        Err(e) => t.err("alice other key", e),
    }
    t.get(
        "alice read own",
        alice
            .get("/alice/", Some(GetOptions::new().with_prefix()))
            .await,
    );
    t.get(
        "alice read all",
        alice.get("/", Some(GetOptions::new().with_prefix())).await,
    );
    match alice
        .watch("/bob/", Some(WatchOptions::new().with_prefix()))
        .await
    {
        Ok(mut w) => match tokio::time::timeout(TIMEOUT, w.message()).await.unwrap() {
            Ok(Some(r)) => t.log(
                "alice watch other",
                format!(
                    "created {} canceled {} id {} reason {:?}",
                    r.created(),
                    r.canceled(),
                    r.watch_id(),
                    r.cancel_reason()
                ),
            ),
            Ok(None) => t.log("alice watch other", "closed".into()),
            Err(e) => t.err("alice watch other", e),
        },
        Err(e) => t.err("alice watch other", e),
    }
    match alice.user_add("eve", "x", None).await {
        Ok(_) => t.log("alice admin", "accepted".into()),
        Err(e) => t.err("alice admin", e),
    }
    let mut root = login("root", "rootpw").await.unwrap();
    t.get("root read", root.get("/alice/x", None).await);
    root.auth_disable().await.unwrap();
    t.get("after disable", c.get("/alice/x", None).await);
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
