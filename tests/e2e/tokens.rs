use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parley_e2e::{SfuProcess, WsClient, bin};
use parley_proto::{AccessClaims, Grants};
use parley_sfu::auth::TokenAuthority;
use serde_json::json;

const SECRET: &str = "e2e-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Mints with the real `parley-sfu token` command.
async fn cli_token(room: &str, identity: &str, extra: &[&str]) -> String {
    let output = tokio::process::Command::new(bin("parley-sfu"))
        .args([
            "token",
            "--room",
            room,
            "--identity",
            identity,
            "--auth-secret",
            SECRET,
        ])
        .args(extra)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn join(room: &str, token: Option<&str>) -> serde_json::Value {
    let mut join = json!({"type": "join", "protocol": [1], "room": room, "name": "Ada"});
    if let Some(token) = token {
        join["token"] = json!(token);
    }
    join
}

async fn refused(url: &str, message: serde_json::Value, code: &str) {
    let mut client = WsClient::connect(url).await.unwrap();
    client.send(&message).await.unwrap();
    client.expect_error(code).await.unwrap();
    assert_eq!(
        client.expect("bye").await.unwrap()["reason"],
        "join_refused"
    );
    client.closed().await.unwrap();
}

#[tokio::test]
async fn tokens_are_accepted_and_refused_with_clear_codes() {
    let sfu = SfuProcess::start(&["--auth-secret", SECRET]).await.unwrap();
    let url = &sfu.signaling_url;

    let good = cli_token("standup", "ada", &["--name", "Ada L.", "--no-publish"]).await;
    let (mut ada, joined) = WsClient::join_with(url, join("standup", Some(&good)))
        .await
        .unwrap();
    assert_eq!(joined["identity"], "ada");
    assert_eq!(joined["name"], "Ada L.", "the token's name wins");
    assert_eq!(
        joined["grants"],
        json!({"publish": false, "subscribe": true, "chat": true})
    );
    ada.send(&json!({"type": "publish_track", "track": {"id": "cam", "kind": "video", "source": "camera"}}))
        .await
        .unwrap();
    ada.expect_error("permission_denied").await.unwrap();

    refused(url, join("standup", None), "token_required").await;
    refused(url, join("standup", Some("not.a.jwt")), "token_invalid").await;
    refused(url, join("other-room", Some(&good)), "token_wrong_room").await;

    let forger = TokenAuthority::new(b"some-other-secret-entirely").unwrap();
    let expired_by = Arc::new(TokenAuthority::new(SECRET.as_bytes()).unwrap());
    let claims = |exp| AccessClaims {
        sub: "eve".into(),
        room: "standup".into(),
        name: None,
        grants: Grants::ALL,
        iat: now() - 7200,
        exp,
        nbf: None,
    };
    let forged = forger.mint(&claims(now() + 3600)).unwrap();
    refused(url, join("standup", Some(&forged)), "token_invalid").await;
    let expired = expired_by.mint(&claims(now() - 3600)).unwrap();
    refused(url, join("standup", Some(&expired)), "token_expired").await;

    ada.roundtrip(1).await.unwrap();
    assert_eq!(
        sfu.metric("parley_signaling_errors_total{code=\"token_expired\"}")
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn turn_credentials_come_with_joined() {
    let sfu = SfuProcess::start(&[
        "--turn-secret",
        "coturn-shared-secret",
        "--turn-url",
        "turns:turn.example.com:443?transport=tcp",
        "--stun-url",
        "stun:turn.example.com:3478",
        "--turn-ttl",
        "1h",
    ])
    .await
    .unwrap();
    let (_, joined) = WsClient::join_with(
        &sfu.signaling_url,
        json!({"type": "join", "protocol": [1], "room": "r", "name": "Ada", "identity": "ada"}),
    )
    .await
    .unwrap();
    let servers = joined["ice_servers"].as_array().unwrap();
    assert_eq!(servers[0]["urls"], json!(["stun:turn.example.com:3478"]));
    let turn = &servers[1];
    assert_eq!(
        turn["urls"],
        json!(["turns:turn.example.com:443?transport=tcp"])
    );
    let username = turn["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(
        user, joined["participant_id"],
        "identities stay out of TURN logs"
    );
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry.abs_diff(now() + 3600) < 60, "expiry {expiry}");
    assert_eq!(
        turn["credential"].as_str().unwrap().len(),
        28,
        "base64 of a SHA-1 HMAC"
    );
}

#[tokio::test]
async fn token_command_refuses_bad_input() {
    let output = tokio::process::Command::new(bin("parley-sfu"))
        .args([
            "token",
            "--room",
            "bad room",
            "--identity",
            "ada",
            "--auth-secret",
            SECRET,
        ])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("room name"));
    let output = tokio::process::Command::new(bin("parley-sfu"))
        .args(["token", "--room", "r", "--identity", "ada"])
        .env_remove("PARLEY_AUTH_SECRET")
        .env_remove("PARLEY_SFU_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no auth secret"));
}
