#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

//! The repository conformance suite. It runs against SQLite by default and against PostgreSQL
//! when `TETHER_TEST_DATABASE_URL` is set (each test gets a fresh database there). CI runs it
//! both ways.

use tether_store::audit::{append_version, get_version};
use tether_store::identity::{insert_refresh_token, revoke_refresh_family, use_refresh_token};
use tether_store::resources::{find_resource, insert_resource, update_resource};
use tether_store::settings::init_setting;
use tether_store::tuples::{delete_tuples_touching, write_tuple};
use tether_store::{
    CacheLimits, RefreshTokenRow, RequestLogFilter, RequestLogRecord, ResourceRow, Store,
    StoreError, StoreOptions, TupleRow, VersionRecord,
};

struct TestDb {
    store: Store,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn fresh_store() -> TestDb {
    fresh_store_with(CacheLimits::default()).await
}

async fn fresh_store_with(cache: CacheLimits) -> TestDb {
    if let Ok(admin) = std::env::var("TETHER_TEST_DATABASE_URL") {
        let url = tether_testkit::fresh_pg_database(&admin).await;
        let opts = StoreOptions {
            cache,
            ..StoreOptions::default()
        };
        let store = Store::open(&url, &opts).await.unwrap();
        return TestDb {
            store,
            url,
            _dir: None,
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let opts = StoreOptions {
        create_sqlite: true,
        cache,
        ..StoreOptions::default()
    };
    TestDb {
        store: Store::open(&url, &opts).await.unwrap(),
        url,
        _dir: Some(dir),
    }
}

fn resource(name: &str) -> ResourceRow {
    ResourceRow {
        id: format!("res_{name}"),
        org_id: "org_1".into(),
        env_id: String::new(),
        kind: "Team".into(),
        name: name.into(),
        spec: "{}".into(),
        labels: "{}".into(),
        created_at: 1,
        created_by: "user:a".into(),
        updated_at: 1,
        updated_by: "user:a".into(),
        version_id: "ver_1".into(),
    }
}

fn version(id: &str, org: &str) -> VersionRecord {
    VersionRecord {
        id: id.into(),
        org_id: org.into(),
        resource_kind: "Team".into(),
        resource_id: "res_a".into(),
        resource_name: "a".into(),
        event: "create".into(),
        actor: "user:a".into(),
        at: 5,
        yaml_after: Some(format!("name: {id}\n")),
        diff: "+name".into(),
        ..VersionRecord::default()
    }
}

#[tokio::test]
async fn resources_insert_find_update_and_unique_names() {
    let db = fresh_store().await;
    let mut tx = db.store.begin().await.unwrap();
    insert_resource(&mut tx, &resource("a")).await.unwrap();
    tx.commit().await.unwrap();

    let got = find_resource(db.store.reader(), "org_1", "", "Team", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, resource("a"));

    let mut tx = db.store.begin().await.unwrap();
    let mut dup = resource("a");
    dup.id = "res_other".into();
    let err = insert_resource(&mut tx, &dup).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists), "{err:?}");
    drop(tx);

    let mut tx = db.store.begin().await.unwrap();
    let mut changed = resource("a");
    changed.spec = r#"{"description":"x"}"#.into();
    changed.updated_at = 9;
    update_resource(&mut tx, &changed, &changed.version_id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A write based on an older read (another version id) changes nothing.
    let mut tx = db.store.begin().await.unwrap();
    let mut stale = changed.clone();
    stale.spec = r#"{"description":"stale"}"#.into();
    stale.version_id = "ver_next".into();
    let err = update_resource(&mut tx, &stale, "ver_older")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale), "{err:?}");
    let mut gone = stale.clone();
    gone.id = "res_gone".into();
    let err = update_resource(&mut tx, &gone, &changed.version_id)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    drop(tx);
    let got = find_resource(db.store.reader(), "org_1", "", "Team", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.spec, changed.spec);
    assert_eq!(got.updated_at, 9);
    let listed = db
        .store
        .list_resources("org_1", Some(""), "Team")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn a_rolled_back_write_leaves_nothing() {
    let db = fresh_store().await;
    let mut tx = db.store.begin().await.unwrap();
    insert_resource(&mut tx, &resource("gone")).await.unwrap();
    append_version(&mut tx, &mut version("ver_gone", "org_1"))
        .await
        .unwrap();
    drop(tx);
    assert!(
        find_resource(db.store.reader(), "org_1", "", "Team", "gone")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        get_version(db.store.reader(), "ver_gone")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(db.store.verify_versions("org_1").await.unwrap(), None);
}

async fn chain_of(store: &Store, n: usize) {
    for i in 1..=n {
        let mut tx = store.begin().await.unwrap();
        append_version(&mut tx, &mut version(&format!("ver_{i}"), "org_1"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn version_chain_verifies_and_links() {
    let db = fresh_store().await;
    chain_of(&db.store, 5).await;
    assert_eq!(db.store.verify_versions("org_1").await.unwrap(), None);
    let v3 = get_version(db.store.reader(), "ver_3")
        .await
        .unwrap()
        .unwrap();
    let v2 = get_version(db.store.reader(), "ver_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v3.seq, 3);
    assert_eq!(v3.prev_hash, v2.hash);
}

async fn raw(store: &Store, sql: &'static str) {
    let mut tx = store.begin().await.unwrap();
    sqlx::query(sql).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

/// The single number a query returns as `n`.
async fn count(store: &Store, sql: &'static str) -> i64 {
    use sqlx::Row as _;
    let mut tx = store.begin().await.unwrap();
    sqlx::query(sql)
        .fetch_one(&mut *tx)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

#[tokio::test]
async fn verify_detects_an_edited_row() {
    let db = fresh_store().await;
    chain_of(&db.store, 4).await;
    raw(
        &db.store,
        "UPDATE versions SET actor = 'user:mallory' WHERE id = 'ver_2'",
    )
    .await;
    let brk = db.store.verify_versions("org_1").await.unwrap().unwrap();
    assert_eq!((brk.seq, brk.id.as_str()), (2, "ver_2"));
}

#[tokio::test]
async fn verify_detects_a_deleted_row() {
    let db = fresh_store().await;
    chain_of(&db.store, 4).await;
    raw(&db.store, "DELETE FROM versions WHERE id = 'ver_3'").await;
    let brk = db.store.verify_versions("org_1").await.unwrap().unwrap();
    assert_eq!(brk.seq, 4);
}

#[tokio::test]
async fn verify_detects_a_removed_tail_and_reordering() {
    let db = fresh_store().await;
    chain_of(&db.store, 3).await;
    raw(&db.store, "DELETE FROM versions WHERE id = 'ver_3'").await;
    assert!(db.store.verify_versions("org_1").await.unwrap().is_some());

    let db = fresh_store().await;
    chain_of(&db.store, 3).await;
    // Swap the positions of two records.
    raw(
        &db.store,
        "UPDATE versions SET seq = 100 WHERE id = 'ver_1'",
    )
    .await;
    raw(&db.store, "UPDATE versions SET seq = 1 WHERE id = 'ver_2'").await;
    raw(&db.store, "UPDATE versions SET seq = 2 WHERE id = 'ver_1'").await;
    let brk = db.store.verify_versions("org_1").await.unwrap().unwrap();
    assert_eq!(brk.seq, 1);
}

#[tokio::test]
async fn concurrent_appends_keep_one_unbroken_chain() {
    let db = fresh_store().await;
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = db.store.clone();
        handles.push(tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            append_version(&mut tx, &mut version(&format!("ver_c{i}"), "org_1"))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(db.store.verify_versions("org_1").await.unwrap(), None);
    assert_eq!(db.store.versions_of("res_a").await.unwrap().len(), 40);
}

fn request(i: i64, principal: &str) -> RequestLogRecord {
    RequestLogRecord {
        at: 1_000 + i,
        request_id: format!("req_{i}"),
        org: "default".into(),
        principal: principal.into(),
        action: "environment.read".into(),
        resource: format!("/v1/orgs/default/envs/e{i}"),
        result: if i % 2 == 0 {
            "allowed".into()
        } else {
            "denied".into()
        },
        status: 200,
        ip: "127.0.0.1".into(),
        user_agent: "test".into(),
        latency_us: 10,
        ..RequestLogRecord::default()
    }
}

#[tokio::test]
async fn request_log_appends_searches_and_verifies() {
    let db = fresh_store().await;
    let mut batch: Vec<_> = (0..10)
        .map(|i| request(i, if i < 5 { "user:a" } else { "user:b" }))
        .collect();
    db.store.append_requests(&mut batch).await.unwrap();
    assert_eq!(db.store.verify_requests().await.unwrap(), None);

    let f = RequestLogFilter {
        principal: Some("user:b".into()),
        ..Default::default()
    };
    assert_eq!(db.store.search_requests(&f).await.unwrap().len(), 5);
    let f = RequestLogFilter {
        since: Some(1_003),
        until: Some(1_006),
        ..Default::default()
    };
    assert_eq!(db.store.search_requests(&f).await.unwrap().len(), 3);
    let f = RequestLogFilter {
        result: Some("denied".into()),
        limit: Some(2),
        ..Default::default()
    };
    let page = db.store.search_requests(&f).await.unwrap();
    assert_eq!(page.len(), 2);
    let f = RequestLogFilter {
        result: Some("denied".into()),
        after_seq: Some(page[1].seq),
        ..Default::default()
    };
    assert_eq!(db.store.search_requests(&f).await.unwrap().len(), 3);

    // Rewriting one record inside its stored batch is found.
    tamper_batches(&db.store, b"/envs/e4", b"/envs/e9").await;
    assert_eq!(
        db.store.verify_requests().await.unwrap().unwrap().id,
        "req_4"
    );
}

/// Replaces bytes inside every stored batch of request records, as someone with write access
/// to the database could.
async fn tamper_batches(store: &Store, from: &[u8], to: &[u8]) {
    use sqlx::Row as _;
    let rows = sqlx::query("SELECT last_seq, records FROM request_log_batches")
        .fetch_all(store.reader())
        .await
        .unwrap();
    for row in rows {
        let seq: i64 = row.try_get("last_seq").unwrap();
        let mut blob: Vec<u8> = row.try_get("records").unwrap();
        let Some(at) = blob.windows(from.len()).position(|w| w == from) else {
            continue;
        };
        blob.splice(at..at + from.len(), to.iter().copied());
        let mut tx = store.begin().await.unwrap();
        sqlx::query("UPDATE request_log_batches SET records = $1 WHERE last_seq = $2")
            .bind(blob)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// Appends each record in its own batch.
async fn append_one_by_one(store: &Store, records: &mut [RequestLogRecord]) {
    for r in records.iter_mut() {
        let mut one = [r.clone()];
        store.append_requests(&mut one).await.unwrap();
        let [done] = one;
        *r = done;
    }
}

/// The request log stores its organization, principal, action and user agent strings once
/// each, in `request_log_terms`; records hold ids.
#[tokio::test]
async fn request_log_stores_each_term_once() {
    let db = fresh_store().await;
    let mut batch: Vec<_> = (0..10)
        .map(|i| request(i, if i < 5 { "user:a" } else { "user:b" }))
        .collect();
    db.store.append_requests(&mut batch).await.unwrap();
    // A second store on the same database knows no ids yet: it must find the stored ones.
    let again = Store::open(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let mut batch: Vec<_> = (10..20)
        .map(|i| RequestLogRecord {
            user_agent: if i == 19 { "other-agent" } else { "test" }.into(),
            ..request(i, "user:a")
        })
        .collect();
    again.append_requests(&mut batch).await.unwrap();
    // default, user:a, user:b, environment.read, test, other-agent.
    assert_eq!(
        count(&db.store, "SELECT count(*) AS n FROM request_log_terms").await,
        6
    );
    assert_eq!(
        count(
            &db.store,
            "SELECT CAST(sum(last_seq - first_seq + 1) AS BIGINT) AS n FROM request_log_batches"
        )
        .await,
        20
    );
    let f = RequestLogFilter {
        principal: Some("user:a".into()),
        ..Default::default()
    };
    let found = db.store.search_requests(&f).await.unwrap();
    assert_eq!(found.len(), 15);
    assert!(
        found
            .iter()
            .all(|r| r.action == "environment.read" && r.org == "default")
    );
    assert_eq!(found.last().unwrap().user_agent, "other-agent");
    assert_eq!(db.store.verify_requests().await.unwrap(), None);

    // A term too long for the unique index (stored again when not cached) reads back whole.
    let long = "a".repeat(600);
    for store in [&db.store, &again] {
        let mut batch = vec![RequestLogRecord {
            user_agent: long.clone(),
            ..request(20, "user:a")
        }];
        store.append_requests(&mut batch).await.unwrap();
    }
    let f = RequestLogFilter {
        after_seq: Some(20),
        ..Default::default()
    };
    let found = db.store.search_requests(&f).await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|r| r.user_agent == long));
    assert_eq!(db.store.verify_requests().await.unwrap(), None);

    // A term edited in place changes every record that uses it: the chain finds the first.
    raw(
        &db.store,
        "UPDATE request_log_terms SET term = 'user:z' WHERE term = 'user:b'",
    )
    .await;
    assert_eq!(
        db.store.verify_requests().await.unwrap().unwrap().id,
        "req_5"
    );
    // A term deleted by hand: its records still show, and the first of them fails.
    raw(
        &db.store,
        "DELETE FROM request_log_terms WHERE term = 'environment.read'",
    )
    .await;
    assert_eq!(
        db.store.verify_requests().await.unwrap().unwrap().id,
        "req_0"
    );
    let all = RequestLogFilter::default();
    assert_eq!(db.store.search_requests(&all).await.unwrap().len(), 22);
}

#[tokio::test]
async fn refresh_tokens_are_single_use() {
    let db = fresh_store().await;
    let t = RefreshTokenRow {
        id: "rt_1".into(),
        family_id: "fam".into(),
        principal_id: "res_u".into(),
        org_id: "org_1".into(),
        token_hash: vec![1, 2, 3],
        created_at: 1,
        expires_at: 100,
        used_at: None,
        revoked_at: None,
    };
    let mut tx = db.store.begin().await.unwrap();
    insert_refresh_token(&mut tx, &t).await.unwrap();
    assert!(use_refresh_token(&mut tx, "rt_1", 5).await.unwrap());
    assert!(!use_refresh_token(&mut tx, "rt_1", 6).await.unwrap());
    revoke_refresh_family(&mut tx, "fam", 7).await.unwrap();
    tx.commit().await.unwrap();
    let got = db.store.refresh_token("rt_1").await.unwrap().unwrap();
    assert_eq!(
        (got.used_at, got.revoked_at, got.token_hash),
        (Some(5), Some(7), vec![1, 2, 3])
    );
}

#[tokio::test]
async fn settings_are_written_once() {
    let db = fresh_store().await;
    let mut tx = db.store.begin().await.unwrap();
    assert_eq!(
        init_setting(&mut tx, "pepper", b"first").await.unwrap(),
        b"first"
    );
    assert_eq!(
        init_setting(&mut tx, "pepper", b"second").await.unwrap(),
        b"first"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        db.store.get_setting("pepper").await.unwrap().unwrap(),
        b"first"
    );
}

#[tokio::test]
async fn tuples_cascade_with_their_object() {
    let db = fresh_store().await;
    let t = |o: &str, r: &str, s: &str| TupleRow {
        object: o.into(),
        relation: r.into(),
        subject: s.into(),
        org_id: "org_1".into(),
        source_id: "res_x".into(),
        condition: None,
    };
    let mut tx = db.store.begin().await.unwrap();
    write_tuple(&mut tx, &t("team:t1", "member", "user:u1"))
        .await
        .unwrap();
    write_tuple(&mut tx, &t("team:t1", "member", "user:u1"))
        .await
        .unwrap();
    write_tuple(&mut tx, &t("team:t2", "member", "team:t1#member"))
        .await
        .unwrap();
    write_tuple(&mut tx, &t("organization:o", "admin", "user:u2"))
        .await
        .unwrap();
    let removed = delete_tuples_touching(&mut tx, "team:t1").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(removed.len(), 2);
    assert_eq!(db.store.all_tuples().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_urls_are_refused() {
    for url in [
        "mysql://u:p@h/d",
        "",
        "sqlite:///nonexistent-dir/x.db",
        "file.db",
    ] {
        let err = Store::open(url, &StoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BadUrl(_)), "{url}: {err:?}");
        assert!(!err.to_string().contains(":p@"));
    }
}

#[tokio::test]
async fn large_request_batches_chain_across_chunks() {
    let db = fresh_store().await;
    for _ in 0..3 {
        let mut batch: Vec<_> = (0..120).map(|i| request(i, "user:bulk")).collect();
        db.store.append_requests(&mut batch).await.unwrap();
    }
    assert_eq!(db.store.verify_requests().await.unwrap(), None);
    let f = RequestLogFilter {
        limit: Some(10_000),
        ..Default::default()
    };
    let all = db.store.search_requests(&f).await.unwrap();
    assert_eq!(all.len(), 360);
    assert!(
        all.windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );
}

#[tokio::test]
async fn pruning_keeps_the_request_chain_verifiable_and_a_deleted_record_is_found() {
    let db = fresh_store().await;
    // Retention deletes whole batches: here, one per record.
    let mut batch: Vec<_> = (0..10).map(|i| request(i, "user:a")).collect();
    append_one_by_one(&db.store, &mut batch).await;
    let hashes: Vec<String> = batch.iter().map(|r| r.hash.clone()).collect();
    let all = db
        .store
        .search_requests(&RequestLogFilter::default())
        .await
        .unwrap();
    assert_eq!(all[0].prev_hash, tether_store::GENESIS_HASH);

    // Records 1..=5 were written before 1_005: pruned; 6..=10 stay.
    assert_eq!(db.store.prune_requests(1_005).await.unwrap(), 5);
    assert_eq!(db.store.prune_requests(1_005).await.unwrap(), 0);
    assert_eq!(db.store.verify_requests().await.unwrap(), None);
    let kept = db
        .store
        .search_requests(&RequestLogFilter::default())
        .await
        .unwrap();
    assert_eq!(
        kept.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    // The oldest kept record links to the pruned one through the anchor.
    assert_eq!(kept[0].prev_hash, hashes[4]);
    assert!(kept.windows(2).all(|w| w[1].prev_hash == w[0].hash));

    // Deleting the oldest kept record by hand (not by pruning) breaks the chain at its start,
    // and deleting one in the middle breaks it at the next.
    raw(
        &db.store,
        "DELETE FROM request_log_batches WHERE last_seq = 6",
    )
    .await;
    assert_eq!(db.store.verify_requests().await.unwrap().unwrap().seq, 7);
    let db = fresh_store().await;
    let mut batch: Vec<_> = (0..4).map(|i| request(i, "user:a")).collect();
    append_one_by_one(&db.store, &mut batch).await;
    raw(
        &db.store,
        "DELETE FROM request_log_batches WHERE last_seq = 2",
    )
    .await;
    let brk = db.store.verify_requests().await.unwrap().unwrap();
    assert_eq!((brk.seq, brk.id.as_str()), (3, "req_2"));
}

/// A search by organization, principal or action reads only the batches whose term index has
/// the term. Verification checks each index against its records, so editing one to hide a
/// batch from searches is found; batches without an index (written before migration 0010)
/// are still searched.
#[tokio::test]
async fn searches_by_term_read_the_batches_their_index_names() {
    let db = fresh_store().await;
    for b in 0..10 {
        let mut batch: Vec<_> = (0..20).map(|i| request(b * 20 + i, "user:many")).collect();
        db.store.append_requests(&mut batch).await.unwrap();
        if b == 4 {
            // Seqs 1..=100 so far: this one is 101, a batch of its own.
            let mut rare = [request(1_000, "user:rare")];
            db.store.append_requests(&mut rare).await.unwrap();
            assert_eq!(rare[0].seq, 101);
        }
    }
    let by = |principal: &str| RequestLogFilter {
        principal: Some(principal.into()),
        limit: Some(10_000),
        ..Default::default()
    };
    assert_eq!(
        db.store
            .search_requests(&by("user:rare"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        db.store
            .search_requests(&by("user:many"))
            .await
            .unwrap()
            .len(),
        200
    );
    assert_eq!(db.store.verify_requests().await.unwrap(), None);

    // The rare batch's index made to list only what the first batch's does: searches skip it,
    // and verification names it.
    raw(
        &db.store,
        "UPDATE request_log_batches SET term_index = \
         (SELECT term_index FROM request_log_batches WHERE last_seq = 20) WHERE last_seq = 101",
    )
    .await;
    assert!(
        db.store
            .search_requests(&by("user:rare"))
            .await
            .unwrap()
            .is_empty()
    );
    let brk = db.store.verify_requests().await.unwrap().unwrap();
    assert_eq!(brk.seq, 101);
    assert!(brk.reason.contains("term index"), "{}", brk.reason);

    // Batches without an index are read whole.
    raw(
        &db.store,
        "UPDATE request_log_batches SET term_index = NULL",
    )
    .await;
    let found = db.store.search_requests(&by("user:rare")).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].seq, 101);
    assert_eq!(
        db.store
            .search_requests(&by("user:many"))
            .await
            .unwrap()
            .len(),
        200
    );
    assert_eq!(db.store.verify_requests().await.unwrap(), None);
}

/// Newest first: records come in descending seq order across and within batches, pages
/// continue with `before_seq`, and the term-index path reads the same way.
#[tokio::test]
async fn searches_read_newest_first_with_a_before_cursor() {
    let db = fresh_store().await;
    for b in 0..6 {
        let mut batch: Vec<_> = (0..10)
            .map(|i| {
                let n = b * 10 + i;
                request(
                    n,
                    if n % 3 == 0 {
                        "user:third"
                    } else {
                        "user:rest"
                    },
                )
            })
            .collect();
        db.store.append_requests(&mut batch).await.unwrap();
    }
    let seqs = |v: Vec<RequestLogRecord>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
    let newest = |before: Option<i64>, principal: Option<&str>| RequestLogFilter {
        newest_first: true,
        before_seq: before,
        principal: principal.map(str::to_owned),
        limit: Some(7),
        ..Default::default()
    };
    let page = seqs(db.store.search_requests(&newest(None, None)).await.unwrap());
    assert_eq!(page, [60, 59, 58, 57, 56, 55, 54]);
    let next = seqs(
        db.store
            .search_requests(&newest(Some(54), None))
            .await
            .unwrap(),
    );
    assert_eq!(next, [53, 52, 51, 50, 49, 48, 47]);
    // Through the term index: seq n + 1 holds request n, so every third seq from 1.
    let third = seqs(
        db.store
            .search_requests(&newest(Some(50), Some("user:third")))
            .await
            .unwrap(),
    );
    assert_eq!(third, [49, 46, 43, 40, 37, 34, 31]);
    // Both cursors bound the page.
    let f = RequestLogFilter {
        after_seq: Some(3),
        ..newest(Some(8), None)
    };
    assert_eq!(
        seqs(db.store.search_requests(&f).await.unwrap()),
        [7, 6, 5, 4]
    );
    // Oldest first is unchanged.
    let f = RequestLogFilter {
        limit: Some(3),
        ..Default::default()
    };
    assert_eq!(seqs(db.store.search_requests(&f).await.unwrap()), [1, 2, 3]);
}

/// How many times `term` is stored in `request_log_terms`.
async fn stored_terms(store: &Store, term: &str) -> i64 {
    use sqlx::Row as _;
    sqlx::query("SELECT count(*) AS n FROM request_log_terms WHERE term = $1")
        .bind(term)
        .fetch_one(store.reader())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

/// Retention deletes the interned strings (a principal, a user agent) that no kept record
/// uses, keeps those that kept records use, and a server whose cache still holds a deleted
/// string's id stores the string again.
#[tokio::test]
async fn retention_deletes_the_strings_no_kept_record_uses() {
    let db = fresh_store().await;
    // A second server on the same database, with its own cache of term ids.
    let other = Store::open(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let gone = |i, at| RequestLogRecord {
        at,
        user_agent: "agent-gone".into(),
        ..request(i, "user:gone")
    };
    other.append_requests(&mut [gone(0, 1_000)]).await.unwrap();
    // A term's stored last use may lag by up to TERM_REFRESH_SEQS records, so pruning needs
    // that many more behind the last use before it deletes the term.
    let lag = tether_store::request_log::TERM_REFRESH_SEQS;
    let mut old: Vec<_> = (0..lag + 10)
        .map(|i| RequestLogRecord {
            at: 2_000 + i,
            ..request(i, "user:old")
        })
        .collect();
    for chunk in old.chunks_mut(512) {
        db.store.append_requests(chunk).await.unwrap();
    }
    let mut kept: Vec<_> = (0..5)
        .map(|i| RequestLogRecord {
            at: 20_000_000 + i,
            user_agent: "agent-kept".into(),
            ..request(i, "user:kept")
        })
        .collect();
    db.store.append_requests(&mut kept).await.unwrap();

    assert_eq!(
        db.store.prune_requests(10_000_000).await.unwrap(),
        u64::try_from(lag + 11).unwrap()
    );
    assert_eq!(stored_terms(&db.store, "user:gone").await, 0);
    assert_eq!(stored_terms(&db.store, "agent-gone").await, 0);
    for used in ["user:kept", "agent-kept", "default", "environment.read"] {
        assert_eq!(stored_terms(&db.store, used).await, 1, "{used}");
    }
    assert_eq!(db.store.verify_requests().await.unwrap(), None);
    let all = db
        .store
        .search_requests(&RequestLogFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert!(
        all.iter().all(|r| r.principal == "user:kept"
            && r.user_agent == "agent-kept"
            && r.org == "default")
    );

    // The other server still caches the deleted ids: it finds them gone and stores the
    // strings again.
    other
        .append_requests(&mut [gone(1, 30_000_000)])
        .await
        .unwrap();
    assert_eq!(stored_terms(&db.store, "user:gone").await, 1);
    let f = RequestLogFilter {
        principal: Some("user:gone".into()),
        ..Default::default()
    };
    let found = db.store.search_requests(&f).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].user_agent, "agent-gone");
    assert_eq!(db.store.verify_requests().await.unwrap(), None);
}

fn secret_version_row(blob: &[u8]) -> tether_store::secrets::SecretVersionRow {
    tether_store::secrets::SecretVersionRow {
        secret_id: "res_s".into(),
        version: 1,
        org_id: "org_1".into(),
        env_id: String::new(),
        blob: Some(blob.to_vec()),
        kek_version: 1,
        created_at: 1,
        created_by: "user:a".into(),
        destroyed_at: None,
        backend: "builtin".into(),
        backend_ref: None,
    }
}

/// Every committed write through a transaction is visible to the cached reads at once: update,
/// rename, delete, and a secret version's rewrap and destroy. A rolled-back write changes nothing.
#[tokio::test]
async fn cached_reads_see_every_committed_write() {
    use tether_store::secrets::{
        destroy_secret_version, insert_secret_versions, rewrap_secret_version,
    };
    let db = fresh_store().await;
    let s = &db.store;
    let cached = |name: &'static str| s.find_resource_cached("org_1", "", "Team", name);
    assert!(cached("a").await.unwrap().is_none());
    let mut tx = s.begin().await.unwrap();
    insert_resource(&mut tx, &resource("a")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(*cached("a").await.unwrap().unwrap(), resource("a"));

    let mut changed = resource("a");
    changed.spec = r#"{"description":"x"}"#.into();
    let mut tx = s.begin().await.unwrap();
    update_resource(&mut tx, &changed, &changed.version_id)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(cached("a").await.unwrap().unwrap().spec, "{}");
    let mut tx = s.begin().await.unwrap();
    update_resource(&mut tx, &changed, &changed.version_id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(cached("a").await.unwrap().unwrap().spec, changed.spec);

    let mut renamed = changed.clone();
    renamed.name = "b".into();
    let mut tx = s.begin().await.unwrap();
    update_resource(&mut tx, &renamed, &renamed.version_id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(cached("a").await.unwrap().is_none());
    assert_eq!(cached("b").await.unwrap().unwrap().id, "res_a");

    let mut tx = s.begin().await.unwrap();
    tether_store::resources::delete_resource(&mut tx, "res_a")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(cached("b").await.unwrap().is_none());

    let mut tx = s.begin().await.unwrap();
    insert_secret_versions(&mut tx, &[secret_version_row(b"one")])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let v = s.secret_version_cached("res_s", 1).await.unwrap().unwrap();
    assert_eq!(v.blob.as_deref(), Some(&b"one"[..]));
    let mut tx = s.begin().await.unwrap();
    rewrap_secret_version(&mut tx, "res_s", 1, b"two", 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let v = s.secret_version_cached("res_s", 1).await.unwrap().unwrap();
    assert_eq!((v.blob.as_deref(), v.kek_version), (Some(&b"two"[..]), 2));
    let mut tx = s.begin().await.unwrap();
    let kept = destroy_secret_version(&mut tx, "res_s", 1, 7)
        .await
        .unwrap();
    assert_eq!(kept, Some(("builtin".to_owned(), None)));
    let missing = destroy_secret_version(&mut tx, "res_s", 9, 7)
        .await
        .unwrap();
    assert_eq!(missing, None);
    tx.commit().await.unwrap();
    let v = s.secret_version_cached("res_s", 1).await.unwrap().unwrap();
    assert_eq!((v.blob.as_deref(), v.destroyed_at), (None, Some(7)));
}

/// The cache serves repeated reads without the database (a write behind its back is not seen),
/// and the TTL bounds how long: this is what a second node or an offline command would do.
#[tokio::test]
async fn writes_the_cache_cannot_see_show_after_the_ttl() {
    let ttl = std::time::Duration::from_millis(300);
    let db = fresh_store_with(CacheLimits {
        ttl,
        ..CacheLimits::default()
    })
    .await;
    let s = &db.store;
    let mut tx = s.begin().await.unwrap();
    insert_resource(&mut tx, &resource("t")).await.unwrap();
    tx.commit().await.unwrap();
    let first = s
        .find_resource_cached("org_1", "", "Team", "t")
        .await
        .unwrap();
    raw(
        s,
        "UPDATE resources SET spec = '{\"x\":1}' WHERE id = 'res_t'",
    )
    .await;
    let again = s
        .find_resource_cached("org_1", "", "Team", "t")
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "a repeated read within the TTL comes from the cache"
    );
    tokio::time::sleep(ttl + std::time::Duration::from_millis(50)).await;
    let later = s
        .find_resource_cached("org_1", "", "Team", "t")
        .await
        .unwrap();
    assert_eq!(later.unwrap().spec, "{\"x\":1}");
}

/// The changelog (PostgreSQL): a second store on the same database (another server) reads the
/// committed writes' events in commit order and drops its cached copies of changed rows; a
/// rolled-back transaction leaves no change. On SQLite (one server per file) there is no
/// feed and nothing is written.
#[tokio::test]
async fn the_changelog_carries_committed_writes_to_another_server() {
    use tether_store::changes::Event;
    let db = fresh_store().await;
    let other = match std::env::var("TETHER_TEST_DATABASE_URL") {
        Ok(_) => Some(
            Store::open(&db.url, &StoreOptions::default())
                .await
                .unwrap(),
        ),
        Err(_) => None,
    };
    let b = other.as_ref().unwrap_or(&db.store);
    let feed = b.change_feed().await.unwrap();
    assert_eq!(
        feed.is_some(),
        other.is_some(),
        "a feed exactly on PostgreSQL"
    );
    let tuple = TupleRow {
        object: "team:t1".into(),
        relation: "member".into(),
        subject: "user:u1".into(),
        org_id: "org_1".into(),
        source_id: "res_a".into(),
        condition: None,
    };
    let mut tx = db.store.begin().await.unwrap();
    insert_resource(&mut tx, &resource("a")).await.unwrap();
    write_tuple(&mut tx, &tuple).await.unwrap();
    tx.commit().await.unwrap();
    // The other server caches the row.
    let cached = b
        .find_resource_cached("org_1", "", "Team", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.spec, resource("a").spec);
    let mut tx = db.store.begin().await.unwrap();
    let mut changed = resource("a");
    changed.spec = r#"{"description":"changed"}"#.into();
    update_resource(&mut tx, &changed, &changed.version_id)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.store.begin().await.unwrap();
    write_tuple(
        &mut tx,
        &TupleRow {
            subject: "user:rolled-back".into(),
            ..tuple.clone()
        },
    )
    .await
    .unwrap();
    drop(tx);
    let mut tx = db.store.begin().await.unwrap();
    delete_tuples_touching(&mut tx, "team:t1").await.unwrap();
    tx.commit().await.unwrap();

    let Some(mut feed) = feed else {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM changes")
            .fetch_one(db.store.reader())
            .await
            .unwrap();
        assert_eq!(rows, 0, "SQLite wrote a changelog");
        return;
    };
    let changes = b.poll_changes(&mut feed).await.unwrap();
    let events: Vec<Event> = changes.iter().map(|c| c.event.clone()).collect();
    assert_eq!(
        events,
        vec![
            Event::TupleWritten(tuple.clone()),
            Event::TupleDeleted(tuple)
        ]
    );
    assert!(changes.iter().all(|c| !c.own));
    let fresh = b
        .find_resource_cached("org_1", "", "Team", "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        fresh.spec, changed.spec,
        "the other server kept a stale row"
    );
    assert!(b.poll_changes(&mut feed).await.unwrap().is_empty());
    // The writer reads its own rows as its own.
    let mut own_feed = db.store.change_feed().await.unwrap().unwrap();
    let own = db.store.poll_changes(&mut own_feed).await.unwrap();
    assert!(!own.is_empty() && own.iter().all(|c| c.own));
}

/// Writes `records` (appended before, so chained) back as the one-row-per-record table of
/// schema versions before 0008 held them, and removes their batches.
async fn to_legacy_rows(store: &Store, records: &[RequestLogRecord]) {
    use sqlx::Row as _;
    let terms: std::collections::HashMap<String, i64> =
        sqlx::query("SELECT id, term FROM request_log_terms")
            .fetch_all(store.reader())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get("term").unwrap(), r.try_get("id").unwrap()))
            .collect();
    let mut tx = store.begin().await.unwrap();
    sqlx::query("DELETE FROM request_log_batches")
        .execute(&mut *tx)
        .await
        .unwrap();
    for r in records {
        sqlx::query(
            "INSERT INTO request_log (seq, at, request_id, org_term, principal_term, \
             action_term, resource, result, status, ip, user_agent_term, latency_us, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(r.seq)
        .bind(r.at)
        .bind(r.request_id.as_str())
        .bind(terms[&r.org])
        .bind(terms[&r.principal])
        .bind(terms[&r.action])
        .bind(r.resource.as_str())
        .bind(r.result.as_str())
        .bind(r.status)
        .bind(r.ip.as_str())
        .bind(terms[&r.user_agent])
        .bind(r.latency_us)
        .bind(hex::decode(&r.hash).unwrap())
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

/// A database written before batches (schema 0007) keeps its request log: opening it moves
/// the records into batches, in chunks, with their hashes, and they search and verify as
/// before. A record tampered with before the move is still caught after it.
#[tokio::test]
async fn request_records_of_the_old_table_move_into_batches() {
    let db = fresh_store().await;
    let mut records: Vec<_> = (0..600)
        .map(|i| request(i, if i % 3 == 0 { "user:a" } else { "user:b" }))
        .collect();
    db.store.append_requests(&mut records).await.unwrap();
    to_legacy_rows(&db.store, &records).await;
    let opened = Store::open(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        count(&opened, "SELECT count(*) AS n FROM request_log").await,
        0
    );
    assert_eq!(opened.verify_requests().await.unwrap(), None);
    let all = RequestLogFilter {
        limit: Some(10_000),
        ..Default::default()
    };
    assert_eq!(opened.search_requests(&all).await.unwrap(), records);
    // New records chain on.
    let mut more = vec![request(600, "user:a")];
    opened.append_requests(&mut more).await.unwrap();
    assert_eq!(more[0].prev_hash, records[599].hash);
    assert_eq!(opened.verify_requests().await.unwrap(), None);

    // Tampered (seq 3) and with a gap (seq 5 deleted) before the move.
    let db = fresh_store().await;
    let mut records: Vec<_> = (0..8).map(|i| request(i, "user:a")).collect();
    db.store.append_requests(&mut records).await.unwrap();
    records[2].status = 500;
    records.remove(4);
    to_legacy_rows(&db.store, &records).await;
    let opened = Store::open(&db.url, &StoreOptions::default())
        .await
        .unwrap();
    let brk = opened.verify_requests().await.unwrap().unwrap();
    assert_eq!((brk.seq, brk.id.as_str()), (3, "req_2"));
    assert_eq!(opened.search_requests(&all).await.unwrap().len(), 7);
}

/// Search skips batches by their stored times and seq range, so verification checks those
/// against the records.
#[tokio::test]
async fn a_batch_whose_bounds_were_edited_fails_verification() {
    let db = fresh_store().await;
    let mut records: Vec<_> = (0..6).map(|i| request(i, "user:a")).collect();
    append_one_by_one(&db.store, &mut records[..3]).await;
    db.store.append_requests(&mut records[3..]).await.unwrap();
    assert_eq!(db.store.verify_requests().await.unwrap(), None);
    raw(
        &db.store,
        "UPDATE request_log_batches SET min_at = min_at + 1 WHERE last_seq = 6",
    )
    .await;
    let brk = db.store.verify_requests().await.unwrap().unwrap();
    assert_eq!(brk.seq, 4);
    assert!(brk.reason.contains("times"), "{}", brk.reason);
    raw(
        &db.store,
        "UPDATE request_log_batches SET min_at = min_at - 1, first_seq = 5 WHERE last_seq = 6",
    )
    .await;
    let brk = db.store.verify_requests().await.unwrap().unwrap();
    assert!(brk.reason.contains("seq range"), "{}", brk.reason);
    // Records before the damaged batch are checked first.
    tamper_batches(&db.store, b"/envs/e1", b"/envs/e7").await;
    assert_eq!(db.store.verify_requests().await.unwrap().unwrap().seq, 2);
}
