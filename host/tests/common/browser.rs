//! A headless Chromium for the console's tests, driven over WebDriver (chromedriver from the test environment's
//! chromium piece). Synchronous like the rest of the test support: it owns a small runtime for fantoccini.
//! Screenshots go to `target/screenshots/<test>/` for people to look at.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use fantoccini::{elements::Element, Client, ClientBuilder, Locator};
use serde_json::json;

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    shots: PathBuf,
    /// Where the browser saves downloads, without asking.
    downloads: PathBuf,
    name: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A fresh browser (its own empty profile: no cookies) whose screenshots go under `name`.
    pub fn start(name: &str) -> Browser {
        let env = super::testenv::testenv();
        assert!(!env.chromium.webdriver_url.is_empty(), "chromedriver is not up: run `cargo xtask testenv up`");
        // fantoccini's TLS stack finds two rustls providers in this build; chromedriver is plain HTTP anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let profile = tempfile::tempdir().expect("profile dir");
        // As root Chromium needs --no-sandbox; the networking flags stop it calling home on a closed network.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let prefs = json!({ "download.default_directory": downloads, "download.prompt_for_download": false });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": env.chromium.binary, "args": args, "prefs": prefs }),
        );
        let client = runtime
            .block_on(ClientBuilder::rustls().expect("tls").capabilities(caps).connect(&env.chromium.webdriver_url))
            .expect("a Chromium session from chromedriver");
        let shots = super::target_dir().join("screenshots").join(name);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Browser { runtime, client: Some(client), shots, downloads, name: name.to_owned(), _profile: profile }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("browser open")
    }

    pub fn goto(&self, url: &str) {
        self.runtime.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.runtime.block_on(self.client().current_url()).expect("current url").to_string()
    }

    /// The element `css`, waiting up to 10 s for it to exist.
    pub fn find(&self, css: &str) -> Element {
        self.runtime
            .block_on(self.client().wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)))
            .unwrap_or_else(|e| panic!("no element {css:?}: {e}"))
    }

    /// Whether `css` exists now (no waiting).
    pub fn exists(&self, css: &str) -> bool {
        self.runtime.block_on(self.client().find_all(Locator::Css(css))).map(|v| !v.is_empty()).unwrap_or(false)
    }

    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.runtime.block_on(element.send_keys(text)).unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.runtime.block_on(element.click()).unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.runtime.block_on(element.text()).unwrap_or_else(|e| panic!("text of {css:?}: {e}"))
    }

    /// Waits until the text of `css` contains `wanted`; returns how long that took.
    pub fn wait_for_text(&self, css: &str, wanted: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let now = self.runtime.block_on(async {
                match self.client().find(Locator::Css(css)).await {
                    Ok(e) => e.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            });
            if now.contains(wanted) {
                return started.elapsed();
            }
            if started.elapsed() > limit {
                self.screenshot("timeout");
                panic!("{css:?} did not show {wanted:?} within {limit:?}; it shows {now:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `script` in the page and returns its value.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.runtime.block_on(self.client().execute(script, vec![])).unwrap_or_else(|e| panic!("script: {e}"))
    }

    /// Sets the window's size (a phone is about 390 px wide); the layout's width is `window.innerWidth`.
    pub fn resize(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("resize to {width}x{height}: {e}"));
    }

    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.runtime.block_on(self.client().screenshot()).expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The text of the file the browser downloaded as `file`, waiting up to `limit` for it to be complete.
    pub fn downloaded(&self, file: &str, limit: Duration) -> String {
        let path = self.downloads.join(file);
        let started = Instant::now();
        loop {
            // Chromium writes `<file>.crdownload` and renames it when done.
            if let Ok(text) = std::fs::read_to_string(&path) {
                return text;
            }
            assert!(started.elapsed() < limit, "no download {file} within {limit:?} in {}", self.downloads.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs axe-core (testenv's chromium piece installs it from npm) in the current page and prints its report.
    /// Returns the violations of impact "serious" or "critical", one line each (empty: none).
    pub fn axe(&self, page: &str) -> Vec<String> {
        let script = &super::testenv::testenv().chromium.axe;
        assert!(
            !script.as_os_str().is_empty(),
            "axe-core is not installed: run `cargo xtask testenv up chromium` (env.json has no chromium.axe)"
        );
        let source = std::fs::read_to_string(script).unwrap_or_else(|e| panic!("read {}: {e}", script.display()));
        // WebDriver scripts run outside the page's Content-Security-Policy, so the page itself stays as strict.
        self.eval(&format!("{source}\n;return null"));
        let report = self.eval(
            "return axe.run(document, { resultTypes: ['violations'] }).then((r) => r.violations.map((v) => \
             ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) })))",
        );
        let violations = report.as_array().cloned().unwrap_or_default();
        let count = |impact: &str| violations.iter().filter(|v| v["impact"] == impact).count();
        println!(
            "axe-core [{} {page}]: {} critical, {} serious, {} moderate, {} minor",
            self.name,
            count("critical"),
            count("serious"),
            count("moderate"),
            count("minor")
        );
        let mut bad = Vec::new();
        for v in &violations {
            let line = format!("  {} ({}): {} at {}", v["id"], v["impact"], v["help"], v["nodes"]);
            println!("{line}");
            if v["impact"] == "serious" || v["impact"] == "critical" {
                bad.push(line);
            }
        }
        bad
    }

    /// `document.documentElement.scrollWidth` against the window's inner width: the page scrolls sideways when
    /// the first is larger.
    pub fn widths(&self) -> (i64, i64) {
        let w = self.eval("return [document.documentElement.scrollWidth, window.innerWidth]");
        (w[0].as_i64().expect("scrollWidth"), w[1].as_i64().expect("innerWidth"))
    }

    /// Logs in through the login form as `name` and waits to leave the login page.
    pub fn log_in(&self, base: &str, name: &str, password: &str) {
        self.goto(&format!("{base}/login"));
        self.fill("#name", name);
        self.fill("#password", password);
        self.click("form button[type=submit]");
        let started = Instant::now();
        while self.url().contains("/login") {
            assert!(started.elapsed() < Duration::from_secs(10), "still on {} after logging in", self.url());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}
