//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! as a person would use it: paste a model name, preview, download, watch progress, pause,
//! resume, see the verified file; and an error they can act on.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/test.sh`). Without them the test is skipped, except under CI (`CI` set), where it
//! fails. `MDL_UPDATE_SCREENSHOTS=1` writes the screenshots to `docs/` (the Chinese one needs a
//! CJK font: Debian's `fonts-noto-cjk`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use testkit::daemon::TestDaemon;
use testkit::hubs::huggingface::{HfFile, HfMock, HfRepo};
use testkit::{pseudo_random_bytes, sha256_hex, Behavior, FileServer};

use crate::{eventually, Web};

const MIB: usize = 1024 * 1024;

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the browsers it started share its process group: end them all.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(chromedriver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(chromedriver);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    eventually(
        Duration::from_secs(20),
        "chromedriver to listen",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    driver
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    browser_in(driver, chromium, profile, "en-US").await
}

/// A browser session whose language is `lang` (an `Accept-Language` tag).
async fn browser_in(driver: &Driver, chromium: &Path, profile: &Path, lang: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1400", format!("--lang={lang}"), "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--force-device-scale-factor=1",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {"intl.accept_languages": lang},
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session")
}

/// Run a script in the page and return its value.
async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.expect("script")
}

/// Wait until the script returns a truthy value; returns it.
/// On a timeout, a screenshot goes to the temp directory and the page's text into the panic.
async fn wait_js(client: &Client, what: &str, script: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let value = js(client, script).await;
        let truthy = !matches!(&value, Value::Null | Value::Bool(false))
            && value != json!("")
            && value != json!(0);
        if truthy {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            let shot = std::env::temp_dir().join("mdl-browser-failure.png");
            if let Ok(png) = client.screenshot().await {
                let _ = std::fs::write(&shot, png);
            }
            let text = js(client, "return document.querySelector('main').innerText").await;
            panic!(
                "timed out waiting for {what} (screenshot: {}); the page says:\n{}",
                shot.display(),
                text.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let input = client.find(Locator::Css(css)).await.expect(css);
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    // A card's buttons stay in place while its numbers change, but retry a stale lookup.
    eventually(Duration::from_secs(10), css, || async {
        match client.find(Locator::Css(css)).await {
            Ok(button) => button.click().await.ok(),
            Err(_) => None,
        }
    })
    .await;
}

async fn screenshot(client: &Client, name: &str, scratch: &Path) {
    let png = client.screenshot().await.expect("screenshot");
    let dir = if std::env::var_os("MDL_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        scratch.to_path_buf()
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// A small model on the mock hub, under the README's example name.
fn example_repo() -> HfRepo {
    HfRepo::model("sentence-transformers/all-MiniLM-L6-v2").with_files(vec![
        HfFile::regular("config.json", br#"{"hidden_size": 384}"#.to_vec()),
        HfFile::regular("tokenizer.json", pseudo_random_bytes(700 * 1024, 11)),
        HfFile::lfs("model.safetensors", pseudo_random_bytes(24 * MIB, 12)),
        HfFile::lfs("onnx/model.onnx", pseudo_random_bytes(16 * MIB, 13)),
        HfFile::regular("README.md", b"# all-MiniLM-L6-v2\n".to_vec()),
    ])
}

#[tokio::test]
async fn a_person_downloads_a_model_in_the_browser() {
    let (Some(chromium), Some(chromedriver)) = (
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
        find_program(&["chromedriver"]),
    ) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium and chromedriver are needed in CI (scripts/test.sh installs them)"
        );
        eprintln!("skipped: chromium / chromedriver not installed (scripts/test.sh installs them)");
        return;
    };

    // A hub with the README's example model, and a file server with a direct link.
    let hub = HfMock::start().await;
    hub.add_repo(example_repo());
    // Slow enough per connection that the model is still downloading when the page pauses
    // it, after the screenshots, also on a loaded machine (at 6 MiB/s it could finish first).
    hub.set_cdn_throttle(Some(2 * MIB as u64));
    let files = FileServer::start().await;
    let weights = files.add(
        "/models/tiny-llama.Q4_K_M.gguf",
        pseudo_random_bytes(24 * MIB, 21),
    );
    files.set_behavior(
        "/models/tiny-llama.Q4_K_M.gguf",
        Behavior {
            rate_limit_bytes_per_sec: Some(2 * MIB as u64),
            ..Default::default()
        },
    );
    let endpoint = hub.endpoint();
    let daemon = TestDaemon::start_with(|s| {
        s.engine.sources.hf_endpoints = vec![endpoint];
        s.progress_interval = Duration::from_millis(200);
    })
    .await;
    let web = Web::with_daemon(daemon).await;
    let scratch = tempfile::tempdir().unwrap();
    let hub_cache = web.daemon.downloads.join("hub");
    let models = web.daemon.downloads.join("models");

    let driver = start_driver(&chromedriver).await;
    let client = browser(&driver, &chromium, &scratch.path().join("profile")).await;
    let result = async {
        // Open the launch link: it signs the browser in and moves on to the page.
        client.goto(&web.launch()).await.unwrap();
        wait_js(
            &client,
            "the page to connect",
            "return document.getElementById('conn').dataset.state === 'live'",
        )
        .await;
        assert_eq!(js(&client, "return document.documentElement.lang").await, "en");

        // Paste a model name as copied from a model page; the page says what it understood.
        type_into(&client, "#source", "sentence-transformers/all-MiniLM-L6-v2").await;
        let detected = js(&client, "return document.getElementById('detected').textContent").await;
        let detected = detected.as_str().unwrap();
        assert!(detected.contains("Hugging Face model"), "{detected}");
        assert!(detected.contains("hf://sentence-transformers/all-MiniLM-L6-v2"), "{detected}");
        click(&client, "#options summary").await;
        type_into(&client, "#dest", &hub_cache.display().to_string()).await;

        // Preview: the files and their sizes, before anything is downloaded.
        click(&client, "#preview-btn").await;
        let rows = wait_js(
            &client,
            "the preview",
            "const p = document.getElementById('plan'); \
             return !p.hidden && document.querySelectorAll('#plan-files tr').length",
        )
        .await;
        assert_eq!(rows, json!(5));
        let plan_text = js(&client, "return document.getElementById('plan').textContent").await;
        assert!(plan_text.as_str().unwrap().contains("model.safetensors"));
        assert!(plan_text.as_str().unwrap().contains("25.2 MB"), "{plan_text}");
        click(&client, "#download-btn").await;
        let hf_job = wait_js(
            &client,
            "the model's card",
            "const c = document.querySelector('.job'); return c && c.dataset.job",
        )
        .await;
        let hf_job: u64 = hf_job.as_str().unwrap().parse().unwrap();

        // A direct link, into a folder of our choice.
        type_into(&client, "#source", &weights.url).await;
        type_into(&client, "#dest", &models.display().to_string()).await;
        type_into(&client, "#sha256", &weights.sha256).await;
        click(&client, "#download-btn").await;
        let url_job = wait_js(
            &client,
            "the link's card",
            "const c = [...document.querySelectorAll('.job')].find(c => c.textContent.includes('tiny-llama')); \
             return c && c.dataset.job",
        )
        .await;
        let url_job: u64 = url_job.as_str().unwrap().parse().unwrap();
        let card = format!("#queue .job[data-job='{url_job}']");

        // Progress arrives live: the bar moves, bytes, speed and time left are shown.
        wait_js(
            &client,
            "progress on the link's card",
            &format!(
                "const c = document.querySelector(\"{card}\"); \
                 return c && c.dataset.state === 'running' && \
                   parseFloat(c.querySelector('.job-bar > div').style.width) > 5 && \
                   c.querySelector('.rate').textContent.includes('/s') && \
                   c.querySelector('.eta').textContent.includes('left')"
            ),
        )
        .await;
        // Both running, with a few seconds of speed history: the picture for the README.
        wait_js(
            &client,
            "the model to be running",
            &format!(
                "const c = document.querySelector(\"#queue .job[data-job='{hf_job}']\"); \
                 return c && parseFloat(c.querySelector('.job-bar > div').style.width) > 3"
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        js(&client, "document.getElementById('source').value = 'sentence-transformers/all-MiniLM-L6-v2'; \
                     document.getElementById('source').dispatchEvent(new Event('input')); \
                     document.getElementById('options').open = false; return true").await;
        screenshot(&client, "dashboard.png", scratch.path()).await;
        click(&client, "#lang-zh").await;
        let title = js(&client, "return document.querySelector('.add h2').textContent").await;
        assert_eq!(title, "下载模型");
        screenshot(&client, "dashboard-zh.png", scratch.path()).await;
        click(&client, "#lang-en").await;
        js(&client, "document.getElementById('source').value = ''; \
                     document.getElementById('source').dispatchEvent(new Event('input')); return true").await;

        // Pause: the card says so and the daemon holds the job with its bytes.
        click(&client, &format!("{card} button.pause")).await;
        wait_js(
            &client,
            "the card to show paused",
            &format!(
                "const c = document.querySelector(\"{card}\"); \
                 return c && c.dataset.state === 'paused' && c.querySelector('.badge').textContent === 'paused'"
            ),
        )
        .await;
        let held = web.daemon.client().await.status(url_job).await.unwrap();
        assert_eq!(held.state.as_str(), "paused");
        assert!(held.bytes_done > 0 && held.bytes_done < weights.len, "{held:?}");

        // Resume: it finishes, verified, and moves to the history with its path.
        click(&client, &format!("{card} button.resume")).await;
        let done_card = format!("#history .job[data-job='{url_job}']");
        let badge = wait_js(
            &client,
            "the link to finish",
            &format!(
                "const c = document.querySelector(\"{done_card}\"); \
                 return c && c.dataset.state === 'completed' && c.querySelector('.badge').textContent"
            ),
        )
        .await;
        assert_eq!(badge, "done, verified");
        let text = js(&client, &format!("return document.querySelector(\"{done_card}\").textContent")).await;
        assert!(text.as_str().unwrap().contains(&models.display().to_string()), "{text}");
        let done = web.daemon.client().await.status(url_job).await.unwrap();
        let path = &done.files[0].path;
        assert_eq!(sha256_hex(&std::fs::read(path).unwrap()), weights.sha256);
        web.daemon.wait_finished(hf_job).await;

        // An error a person can act on: a link to a file that is not there.
        type_into(&client, "#source", &files.url("/models/gone.safetensors")).await;
        click(&client, "#options summary").await;
        type_into(&client, "#sha256", "").await;
        click(&client, "#download-btn").await;
        let error = wait_js(
            &client,
            "the failed card",
            "const c = [...document.querySelectorAll('#history .job')].find(c => c.textContent.includes('gone.safetensors')); \
             return c && c.dataset.state === 'failed' && c.querySelector('.job-error') && c.querySelector('.job-error').textContent",
        )
        .await;
        let error = error.as_str().unwrap();
        assert!(error.contains("Not found"), "{error}");
        assert!(error.contains("Check the model name or link"), "{error}");

        // And one before anything is queued: text that is no model name or link.
        type_into(&client, "#source", "just some words").await;
        click(&client, "#download-btn").await;
        let add_error = wait_js(
            &client,
            "the add box's error",
            "const e = document.getElementById('add-error'); return !e.hidden && e.textContent",
        )
        .await;
        assert!(add_error.as_str().unwrap().contains("That did not work"), "{add_error}");
        assert!(add_error.as_str().unwrap().contains("unsupported source"), "{add_error}");

        // Settings: a hub token goes to the daemon's store and shows as set, never echoed.
        type_into(&client, ".token-row[data-hub='hf'] input", "hf_from_the_page").await;
        click(&client, ".token-row[data-hub='hf'] .token-save").await;
        wait_js(
            &client,
            "the token to show as set",
            "const r = document.querySelector(\".token-row[data-hub='hf']\"); \
             return r && r.querySelector('.state').textContent === '✓ set' && r.querySelector('input').value === ''",
        )
        .await;
        let stored = web.daemon.client().await.hub_tokens().await.unwrap();
        assert!(stored.iter().any(|t| t.hub == "hf" && t.set), "{stored:?}");

        // Health: a downloaded file changed on disk shows a banner with the way out. (The
        // repair resolves the model again, with the token just stored: the hub knows it.)
        hub.set_valid_token("hf_from_the_page");
        let model = web.daemon.client().await.status(hf_job).await.unwrap();
        let config = model
            .files
            .iter()
            .find(|f| f.path.ends_with("config.json"))
            .expect("the model's config.json");
        std::fs::write(&config.path, b"{\"edited\": true}").unwrap();
        let banner = wait_js(
            &client,
            "the health banner",
            "const h = document.getElementById('health');              const item = h.querySelector(\"[data-health='modified']\");              return !h.hidden && item && item.textContent",
        )
        .await;
        assert!(
            banner.as_str().unwrap().contains("1 downloaded file was changed on disk"),
            "{banner}"
        );
        js(&client, "document.getElementById('source').value = ''; \
                     document.getElementById('source').dispatchEvent(new Event('input')); \
                     document.getElementById('options').open = false; \
                     window.scrollTo(0, 0); return true").await;
        screenshot(&client, "dashboard-health.png", scratch.path()).await;
        click(&client, "#lang-zh").await;
        let zh = js(&client, "return document.getElementById('health').textContent").await;
        assert!(zh.as_str().unwrap().contains("1 个已下载的文件在磁盘上被修改"), "{zh}");
        assert!(zh.as_str().unwrap().contains("校验并修复"), "{zh}");
        click(&client, "#lang-en").await;
        click(&client, "[data-health='modified'] button").await;
        wait_js(
            &client,
            "the repair to finish",
            &format!(
                "const c = document.querySelector(\"#history .job[data-job='{hf_job}']\");                  return c && c.dataset.state === 'completed' &&                    !document.querySelector(\"[data-health='modified']\")"
            ),
        )
        .await;
        let repaired = web.daemon.wait_finished(hf_job).await;
        assert_eq!(repaired.state.as_str(), "completed");
        let bytes = std::fs::read(&config.path).unwrap();
        assert_eq!(bytes, br#"{"hidden_size": 384}"#.to_vec());

        // Settings: the hub endpoint presets. Nothing runs any more, so no job asks the
        // mirror (the test never leaves this machine).
        let row = ".endpoint-row[data-hub='hf']";
        let origin = js(&client, &format!("return document.querySelector(\"{row}\").dataset.origin")).await;
        assert_eq!(origin, "config", "the mock hub comes from the test's settings");
        js(
            &client,
            &format!(
                "const s = document.querySelector(\"{row} select\"); s.value = 'hf_mirror';                  s.dispatchEvent(new Event('change')); return true"
            ),
        )
        .await;
        click(&client, &format!("{row} .endpoint-save")).await;
        wait_js(
            &client,
            "the mirror to be in force",
            &format!(
                "const r = document.querySelector(\"{row}\");                  return r && r.dataset.origin === 'runtime' && r.querySelector('select').value === 'hf_mirror'"
            ),
        )
        .await;
        let endpoints = web.daemon.client().await.hub_endpoints().await.unwrap();
        let hf = endpoints.iter().find(|h| h.hub == "hf").unwrap();
        assert_eq!(hf.endpoints, ["https://hf-mirror.com"]);
        js(&client, "document.querySelector('.settings').scrollIntoView(); return true").await;
        screenshot(&client, "dashboard-settings.png", scratch.path()).await;
        click(&client, &format!("{row} .endpoint-reset")).await;
        wait_js(
            &client,
            "the config file's endpoint again",
            &format!("return document.querySelector(\"{row}\").dataset.origin === 'config'"),
        )
        .await;
    }
    .await;
    let _ = client.close().await;

    // A browser set to Chinese gets the page in Chinese without touching the switch.
    let zh = browser_in(
        &driver,
        &chromium,
        &scratch.path().join("profile-zh"),
        "zh-CN",
    )
    .await;
    zh.goto(&web.launch()).await.unwrap();
    let title = wait_js(
        &zh,
        "the page in Chinese",
        "return document.documentElement.lang === 'zh-CN' && document.querySelector('.add h2').textContent",
    )
    .await;
    assert_eq!(title, "下载模型");
    let _ = zh.close().await;
    drop(driver);
    result
}
