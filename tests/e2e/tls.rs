use parley_e2e::{SfuProcess, WsClient};
use serde_json::json;

#[tokio::test]
async fn wss_serves_signaling_over_tls() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let sfu = SfuProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(
        sfu.signaling_url.starts_with("wss://127.0.0.1:"),
        "{}",
        sfu.signaling_url
    );

    let mut client = WsClient::connect_tls(&sfu.signaling_url, certified.cert.der().clone())
        .await
        .unwrap();
    client
        .send(&json!({"type": "join", "protocol": [1], "room": "secure", "name": "Ada"}))
        .await
        .unwrap();
    client.expect("joined").await.unwrap();
    client.roundtrip(1).await.unwrap();

    // A client that does not trust the certificate is refused by its own TLS stack.
    assert!(WsClient::connect(&sfu.signaling_url).await.is_err());
}
