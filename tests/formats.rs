//! Value formats over real HTTP and every store: switching the serializer mid-life keeps
//! every session (lazily and eagerly rewritten), records hold several formats at once, and a
//! codec of the application's own works through the public trait.
#![cfg(feature = "msgpack")]

#[macro_use]
mod common;

use std::collections::BTreeMap;

use ::redis::Commands as _;
use actix_redis_session::codec::{BoxError, Codec, DecodeInto, Encode, Json, MessagePack};

use self::common::{key, serve, serve_concurrent, Backend, Client, RedisServer};

/// JSON with its bytes reversed, under format id 11: unreadable by anything but itself.
struct Reversed;

impl Codec for Reversed {
    fn id(&self) -> u8 {
        11
    }

    fn name(&self) -> &'static str {
        "reversed"
    }

    fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let mut json = serde_json::to_vec(&value)?;
        json.reverse();
        out.extend_from_slice(&json);
        Ok(())
    }

    fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
        let mut json = payload.to_vec();
        json.reverse();
        let mut deserializer = serde_json::Deserializer::from_slice(&json);
        into.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(())
    }
}

/// The format ids of the data fields of every session record on a Redis server, by field.
fn stored_formats(server: &RedisServer) -> BTreeMap<String, Vec<u8>> {
    let mut conn = server.conn();
    let mut formats: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for key in server.keys() {
        if key.contains("user:") {
            continue;
        }
        let record: BTreeMap<String, Vec<u8>> = conn.hgetall(&key).unwrap();
        for (name, value) in record {
            if !name.starts_with("m:") {
                formats.entry(name).or_default().push(value[0] & 0x0f);
            }
        }
    }
    formats
}

mod suite {
    use super::*;

    /// What each client stored, read back.
    async fn reads(client: &mut Client) -> (String, String, String) {
        (
            client.get("/get/name").await.body,
            client.get("/get/n").await.body,
            client.get("/cart").await.body,
        )
    }

    async fn fill(client: &mut Client, i: usize) {
        assert_eq!(client.get(&format!("/set/name/user{i}")).await.body, "ok");
        assert_eq!(client.get("/update-or/n").await.body, "1");
        assert_eq!(client.get(&format!("/cart/add/{i}")).await.body, "1");
    }

    fn expected(i: usize) -> (String, String, String) {
        (format!("\"user{i}\""), "1".into(), format!("[{i}]"))
    }

    /// JSON, then MessagePack, then JSON again, then MessagePack rewriting on load: every
    /// session keeps every value at each step, and what is written follows the format.
    pub async fn switching_formats_keeps_every_session(backend: Backend) {
        let sessions = 12;
        let mut clients = Vec::new();
        let json = serve(backend.sessions(key(1)));
        for i in 0..sessions {
            let mut client = Client::new(&json);
            fill(&mut client, i).await;
            clients.push(client);
        }
        let mut jars: Vec<_> = clients.iter().map(|c| c.jar.clone()).collect();
        if let Some(server) = backend.redis_server() {
            let formats = stored_formats(server);
            assert!(formats.values().flatten().all(|&f| f == 1), "{formats:?}");
        }

        // MessagePack for writes: old values read, new writes in MessagePack, nobody out.
        let packed = serve(backend.builder(key(1)).codec(MessagePack).build().unwrap());
        for (i, jar) in jars.iter_mut().enumerate() {
            let mut client = Client::with_jar(&packed, jar.clone());
            assert_eq!(reads(&mut client).await, expected(i), "session {i}");
            assert_eq!(client.get("/set/later/x").await.body, "ok");
            // The cookie store's cookie holds the session: it changed.
            *jar = client.jar;
        }
        if let Some(server) = backend.redis_server() {
            let formats = stored_formats(server);
            assert!(formats["d:later"].iter().all(|&f| f == 2), "{formats:?}");
            // Lazy: what was not written again is still JSON.
            assert!(formats["d:name"].iter().all(|&f| f == 1), "{formats:?}");
        }
        let on_server = !matches!(backend, Backend::Cookie);
        assert_eq!(
            backend.stored_sessions(),
            if on_server { sessions } else { 0 }
        );

        // Back to JSON: the MessagePack values are read too.
        let json_again = serve(backend.sessions(key(1)));
        for (i, jar) in jars.iter().enumerate() {
            let mut client = Client::with_jar(&json_again, jar.clone());
            assert_eq!(reads(&mut client).await, expected(i));
            assert_eq!(client.get("/get/later").await.body, "\"x\"");
        }

        // MessagePack, rewriting on load, on four workers with every session at once: after
        // one request each, every value is MessagePack and still reads the same.
        let eager = serve_concurrent(
            backend
                .builder(key(1))
                .codec(MessagePack)
                .rewrite_formats_on_load(true)
                .build()
                .unwrap(),
        );
        let requests = jars.iter().map(|jar| {
            let client = Client::with_jar(&eager, jar.clone());
            async move {
                let header = client.cookie_header().unwrap();
                client.send("/entries", Some(&header)).await
            }
        });
        for (i, response) in futures_util::future::join_all(requests)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(response.status, 200);
            let entries: serde_json::Value = serde_json::from_str(&response.body).unwrap();
            assert_eq!(entries["name"], format!("user{i}"));
            assert_eq!(entries["later"], "x");
        }
        if let Some(server) = backend.redis_server() {
            let formats = stored_formats(server);
            assert!(formats.values().flatten().all(|&f| f == 2), "{formats:?}");
        }
        for (i, jar) in jars.iter().enumerate() {
            let mut client = Client::with_jar(&eager, jar.clone());
            assert_eq!(reads(&mut client).await, expected(i));
        }
        assert_eq!(
            backend.stored_sessions(),
            if on_server { sessions } else { 0 }
        );
    }

    /// A codec of the application's own writes, the built-in ones read alongside; moving
    /// away from it keeps its values readable while it is named with `read_codec`.
    pub async fn a_codec_of_ones_own_works_through_the_public_trait(backend: Backend) {
        let mine = serve(backend.builder(key(2)).codec(Reversed).build().unwrap());
        let mut client = Client::new(&mine);
        fill(&mut client, 7).await;
        if let Some(server) = backend.redis_server() {
            let formats = stored_formats(server);
            assert!(formats.values().flatten().all(|&f| f == 11), "{formats:?}");
            let mut conn = server.conn();
            let key = server.keys().into_iter().next().unwrap();
            let raw: Vec<u8> = conn.hget(&key, "d:name").unwrap();
            if raw[0] == 11 {
                assert_eq!(&raw[1..], b"\"7resu\"", "reversed JSON");
            }
        }
        assert_eq!(reads(&mut client).await, expected(7));

        // A middleware that does not read it (not named): its values are hidden, not
        // deleted, and a write of another value keeps them in the session (in the store, or
        // in the cookie the cookie store seals again).
        let blind = serve(backend.sessions(key(2)));
        let mut blind = Client::with_jar(&blind, client.jar.clone());
        assert_eq!(blind.get("/get/name").await.body, "none");
        assert_eq!(blind.get("/set/other/x").await.body, "ok");
        if let Some(server) = backend.redis_server() {
            assert_eq!(stored_formats(server)["d:name"], [11], "still there");
        }
        client.jar = blind.jar;

        // JSON for writes, the old codec still read: a record of two formats.
        let moving = serve(
            backend
                .builder(key(2))
                .codec(Json)
                .read_codec(Reversed)
                .build()
                .unwrap(),
        );
        let mut client = Client::with_jar(&moving, client.jar.clone());
        assert_eq!(reads(&mut client).await, expected(7));
        assert_eq!(client.get("/set/name/renamed").await.body, "ok");
        if let Some(server) = backend.redis_server() {
            let formats = stored_formats(server);
            assert_eq!(formats["d:name"], [1]);
            assert_eq!(formats["d:n"], [11]);
        }
        assert_eq!(client.get("/get/name").await.body, "\"renamed\"");
        assert_eq!(client.get("/get/other").await.body, "\"x\"");
        assert_eq!(client.get("/get/n").await.body, "1");
        assert_eq!(client.get("/update-or/n").await.body, "2");
    }

    /// Values in a format a middleware does not read stay in the session through what it
    /// does: a write, a renew (a login: they move to the new id), and go with a removal of
    /// their name, a clear, or a write of a new value under their name.
    pub async fn values_it_cannot_read_survive_its_renews_and_go_when_removed(backend: Backend) {
        let mine = serve(backend.builder(key(2)).codec(Reversed).build().unwrap());
        let mut client = Client::new(&mine);
        for (name, value) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
            assert_eq!(client.get(&format!("/set/{name}/{value}")).await.body, "ok");
        }
        let blind_srv = serve(backend.sessions(key(2)));
        let mut blind = Client::with_jar(&blind_srv, client.jar.clone());
        assert_eq!(blind.get("/get/a").await.body, "none");
        let before = blind.get("/handle").await.body;
        assert_eq!(blind.get("/set/e/5").await.body, "ok");
        let after = blind.get("/renew").await.body;
        assert_ne!(before, after, "a new id");
        // A removal of a name it cannot see removes the value, and says it was not there.
        assert_eq!(blind.get("/remove/b").await.body, "false");
        // A new value under a hidden name replaces it.
        assert_eq!(blind.get("/set/c/three").await.body, "ok");
        if let Some(server) = backend.redis_server() {
            let formats = stored_formats(server);
            assert_eq!(formats["d:a"], [11], "moved with the renew: {formats:?}");
            assert_eq!(formats["d:d"], [11], "{formats:?}");
            assert_eq!(formats["d:c"], [1], "{formats:?}");
            assert!(!formats.contains_key("d:b"), "{formats:?}");
        }
        let mut client = Client::with_jar(&mine, blind.jar.clone());
        assert_eq!(client.get("/handle").await.body, after);
        assert_eq!(client.get("/get/a").await.body, "\"1\"");
        assert_eq!(client.get("/get/b").await.body, "none");
        assert_eq!(client.get("/get/c").await.body, "\"three\"");
        assert_eq!(client.get("/get/d").await.body, "\"4\"");
        assert_eq!(client.get("/get/e").await.body, "\"5\"");
        // A clear removes every value, those it cannot read too.
        let mut blind = Client::with_jar(&blind_srv, client.jar.clone());
        assert_eq!(blind.get("/clear").await.body, "cleared");
        assert_eq!(blind.get("/set/f/6").await.body, "ok");
        let mut client = Client::with_jar(&mine, blind.jar.clone());
        for name in ["a", "c", "d", "e"] {
            assert_eq!(
                client.get(&format!("/get/{name}")).await.body,
                "none",
                "{name}"
            );
        }
        assert_eq!(client.get("/get/f").await.body, "\"6\"");

        // A session that holds nothing the blind middleware reads: its renew keeps the
        // session (and the value), its `remove_as` removes the value (and so the session).
        let mut only = Client::new(&mine);
        assert_eq!(only.get("/set/x/1").await.body, "ok");
        let mut blind = Client::with_jar(&blind_srv, only.jar.clone());
        let before = blind.get("/handle").await.body;
        let res = blind.get("/renew").await;
        assert_ne!(res.body, before, "a new id");
        assert!(
            res.set_cookie("sid").is_some_and(|c| !c.value().is_empty()),
            "{res:?}"
        );
        let mut only = Client::with_jar(&mine, blind.jar.clone());
        assert_eq!(only.get("/get/x").await.body, "\"1\"");
        let mut blind = Client::with_jar(&blind_srv, only.jar.clone());
        assert_eq!(blind.get("/remove-as/x").await.body, "None");
        let mut only = Client::with_jar(&mine, blind.jar.clone());
        assert_eq!(only.get("/get/x").await.body, "none");

        // A user named in a format the blind middleware does not read stays in the store,
        // but does not follow its renew (a login): the user's index could not be kept in
        // step with it.
        assert_eq!(only.get("/set-user/uma").await.body, "ok");
        assert_eq!(only.get("/user").await.body, "uma");
        let mut blind = Client::with_jar(&blind_srv, only.jar.clone());
        assert_eq!(blind.get("/user").await.body, "none");
        blind.get("/renew").await;
        let mut only = Client::with_jar(&mine, blind.jar.clone());
        assert_eq!(only.get("/user").await.body, "none", "not carried");

        // A logout ends them: what is stored after it in the same request starts afresh.
        assert_eq!(only.get("/set/y/1").await.body, "ok");
        let mut blind = Client::with_jar(&blind_srv, only.jar.clone());
        assert_eq!(blind.get("/purge-then-set/z/2").await.status, 200);
        let mut only = Client::with_jar(&mine, blind.jar.clone());
        assert_eq!(only.get("/get/y").await.body, "none");
        assert_eq!(only.get("/get/z").await.body, "\"2\"");
    }
}

per_backend!(
    switching_formats_keeps_every_session,
    a_codec_of_ones_own_works_through_the_public_trait,
    values_it_cannot_read_survive_its_renews_and_go_when_removed,
);
on_cookie_store!(
    switching_formats_keeps_every_session,
    a_codec_of_ones_own_works_through_the_public_trait,
    values_it_cannot_read_survive_its_renews_and_go_when_removed,
);

#[actix_web::test]
async fn the_builder_refuses_codec_ids_that_are_not_the_applications() {
    struct Taken;
    impl Codec for Taken {
        fn id(&self) -> u8 {
            2
        }
        fn name(&self) -> &'static str {
            "taken"
        }
        fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
            Json.encode(value, out)
        }
        fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
            Json.decode(payload, into)
        }
    }
    let backend = Backend::memory();
    let e = backend.builder(key(3)).codec(Taken).build().unwrap_err();
    assert!(e.to_string().contains("codec"), "{e}");
    struct Impostor;
    impl Codec for Impostor {
        fn id(&self) -> u8 {
            11
        }
        fn name(&self) -> &'static str {
            "impostor"
        }
        fn encode(&self, value: Encode<'_>, out: &mut Vec<u8>) -> Result<(), BoxError> {
            Json.encode(value, out)
        }
        fn decode(&self, payload: &[u8], into: DecodeInto<'_>) -> Result<(), BoxError> {
            Json.decode(payload, into)
        }
    }
    let e = backend
        .builder(key(3))
        .codec(Reversed)
        .read_codec(Impostor)
        .build();
    assert!(e.is_err(), "two codecs with id 11");
    // One codec named twice is one codec.
    assert!(backend
        .builder(key(3))
        .codec(Reversed)
        .read_codec(Reversed)
        .build()
        .is_ok());
}
