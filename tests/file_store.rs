//! The file store beyond the shared acceptance suite: restarts, several stores (as several
//! processes would) on one directory, damaged files.

mod common;

use std::{fs, path::PathBuf, time::Duration};

use actix_redis_session::{store::FileStore, RedisSession};
use common::{all_at_once, key, serve, serve_concurrent, Client};

fn session_files(dir: &std::path::Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "session"))
        .collect()
}

#[actix_web::test]
async fn a_restarted_application_finds_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let jar = {
        let store = FileStore::new(dir.path()).unwrap();
        let srv = serve(RedisSession::builder_with(store, key(1)).build().unwrap());
        let mut client = Client::new(&srv);
        client.get("/set/user/ann").await;
        assert_eq!(client.get("/count").await.body, "1");
        client.jar.clone()
    }; // server and store dropped: the application is gone
    let store = FileStore::new(dir.path()).unwrap();
    let srv = serve(RedisSession::builder_with(store, key(1)).build().unwrap());
    let mut client = Client::with_jar(&srv, jar);
    assert_eq!(client.get("/get/user").await.body, "\"ann\"");
    assert_eq!(client.get("/count").await.body, "2");
}

#[actix_web::test]
async fn the_files_are_named_by_handle_and_hold_neither_id_nor_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    let srv = serve(RedisSession::builder_with(store, key(1)).build().unwrap());
    let mut client = Client::new(&srv);
    client.get("/set/user/ann").await;
    let handle = client.get("/handle").await.body;
    let cookie = client.jar["sid"].clone();
    let files = session_files(dir.path());
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name, format!("session%3A{handle}.session"));
    let bytes = fs::read(&files[0]).unwrap();
    let id_part = cookie.split('.').next().unwrap();
    assert!(
        !String::from_utf8_lossy(&bytes).contains(id_part),
        "no cookie in the file"
    );
}

/// Two stores on one directory stand for two processes: each has its own locks in memory,
/// so only the file locks keep them from overwriting each other's changes.
#[actix_web::test]
async fn two_stores_on_one_directory_lose_no_field_update() {
    let dir = tempfile::tempdir().unwrap();
    let a = serve_concurrent(
        RedisSession::builder_with(FileStore::new(dir.path()).unwrap(), key(1))
            .build()
            .unwrap(),
    );
    let b = serve_concurrent(
        RedisSession::builder_with(FileStore::new(dir.path()).unwrap(), key(1))
            .build()
            .unwrap(),
    );
    let mut client_a = Client::new(&a);
    client_a.get("/set/start/1").await;
    let header = client_a.cookie_header().unwrap();
    let client_b = Client::with_jar(&b, client_a.jar.clone());
    let paths: Vec<String> = (0..40).map(|i| format!("/set/k{i}/{i}")).collect();
    let (on_a, on_b) = paths.split_at(20);
    let (ra, rb) = futures_util::future::join(
        all_at_once(&client_a, on_a, &header),
        all_at_once(&client_b, on_b, &header),
    )
    .await;
    for res in ra.iter().chain(&rb) {
        assert_eq!(res.status, 200, "{res:?}");
    }
    let entries = client_a.get("/entries").await.body;
    for i in 0..40 {
        assert!(
            entries.contains(&format!("\"k{i}\":\"{i}\"")),
            "k{i} lost: {entries}"
        );
    }
}

#[actix_web::test]
async fn a_damaged_file_is_a_fresh_session_never_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path()).unwrap();
    let srv = serve(RedisSession::builder_with(store, key(1)).build().unwrap());
    let mut client = Client::new(&srv);
    for damage in ["truncated", "flipped", "empty", "garbage"] {
        client.jar.clear();
        client.get("/set/user/ann").await;
        let files = session_files(dir.path());
        assert_eq!(files.len(), 1, "{damage}");
        let file = &files[0];
        let mut bytes = fs::read(file).unwrap();
        match damage {
            "truncated" => bytes.truncate(bytes.len() / 2),
            "flipped" => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 1;
            }
            "empty" => bytes.clear(),
            _ => bytes = b"\xff\xfe not a session file at all".to_vec(),
        }
        fs::write(file, &bytes).unwrap();
        let res = client.get("/get/user").await;
        assert_eq!(res.status, 200, "{damage}");
        assert_eq!(res.body, "none", "{damage}: a fresh session");
        assert!(session_files(dir.path()).is_empty(), "{damage}: deleted");
        // The client goes on with a new session.
        client.jar.clear();
    }
}

#[actix_web::test]
async fn expired_files_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path())
        .unwrap()
        .gc_interval(Duration::from_millis(50));
    let sessions = RedisSession::builder_with(store.clone(), key(1))
        .idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let srv = serve(sessions);
    for _ in 0..3 {
        Client::new(&srv).get("/set/user/ann").await;
    }
    assert_eq!(session_files(dir.path()).len(), 3);
    // A temporary file of a crashed write, fresh: kept (a write may be under way).
    fs::write(dir.path().join(".tmp-0000000000000001"), b"partial").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !session_files(dir.path()).is_empty() && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(session_files(dir.path()).is_empty(), "swept");
    assert!(dir.path().join(".tmp-0000000000000001").exists());
    assert_eq!(store.sweep().unwrap(), 0);
}

#[test]
fn a_directory_that_cannot_be_created_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    fs::write(&file, b"").unwrap();
    assert!(FileStore::new(file.join("sessions")).is_err());
}
