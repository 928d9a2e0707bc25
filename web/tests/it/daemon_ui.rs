//! `[ui] enabled`: mdld serves the dashboard from start-up, and a launch link is had with the
//! token file (what `mdlctl ui` does when the address is taken).

use reqwest::StatusCode;
use testkit::daemon::TestDaemon;

#[tokio::test]
async fn the_daemon_serves_the_dashboard_when_configured() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let daemon = TestDaemon::start_with(|s| {
        s.ui.enabled = true;
        s.ui.listen = vec![addr];
    })
    .await;
    let token_file = mdl_web::token_path(&daemon.data_dir);
    let token = crate::eventually(
        std::time::Duration::from_secs(10),
        "the token file",
        || async { std::fs::read_to_string(&token_file).ok() },
    )
    .await;
    let link = crate::eventually(
        std::time::Duration::from_secs(10),
        "the dashboard to answer",
        || async {
            mdl_web::launch::request_launch(addr, token.trim())
                .await
                .ok()
        },
    )
    .await;
    assert!(
        link.starts_with(&format!("http://{addr}/login?t=")),
        "{link}"
    );
    let response = reqwest::Client::new().get(&link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A wrong token gets no link.
    assert!(mdl_web::launch::request_launch(addr, "nope").await.is_err());
}
