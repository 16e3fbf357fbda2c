//! A real Prometheus server for tests: started inside a namespace (where
//! the daemon's loopback metrics address is), scraping every second with a
//! copy of the shipped rules, queried over its HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

pub const LISTEN: &str = "127.0.0.1:9090";

pub struct Prometheus {
    child: Child,
    ns: String,
    pub dir: PathBuf,
}

/// The shipped rules with every `for:` shortened to `for_` and every rate
/// window `[1m]`/`[5m]` to `window`, so a test sees alerts in seconds.
pub fn fast_rules(shipped: &str, for_: &str, window: &str) -> String {
    shipped
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("for:") {
                let _ = rest;
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}for: {for_}")
            } else {
                line.replace("[1m]", &format!("[{window}]"))
                    .replace("[5m]", &format!("[{window}]"))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Prometheus {
    /// Start `prometheus` in `ns`, scraping `target` (host:port) every second,
    /// with `rules` (YAML text) loaded. `dir` holds its config and data.
    pub fn start(ns: &Netns, target: &str, rules: &str, dir: &Path) -> anyhow::Result<Self> {
        Self::start_scraping(ns, &[target], rules, dir)
    }

    /// [`start`](Self::start) with several targets in job `xlb` (the nodes
    /// of a fleet).
    pub fn start_scraping(
        ns: &Netns,
        targets: &[&str],
        rules: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("rules.yml"), rules)?;
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\n\
             scrape_configs:\n  - job_name: xlb\n    static_configs:\n      - targets: [{targets}]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={LISTEN}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`; `cargo xtask setup` installs it)")?;
        let p = Self {
            child,
            ns: ns.name.clone(),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if p.get("/-/ready", &[]).is_ok() {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after 30 s; log:\n{}", p.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` with `query` parameters, from inside the namespace.
    fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
        let url = format!("http://{LISTEN}{path}");
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Netns::in_named(&self.ns, move || {
            let mut req = ureq::get(&url).timeout(Duration::from_secs(10));
            for (k, v) in &query {
                req = req.query(k, v);
            }
            Ok(req.call()?.into_string()?)
        })
    }

    /// An instant query: the result vector as (labels, value).
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<(serde_json::Value, f64)>> {
        let body = self.get("/api/v1/query", &[("query", expr)])?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        if v["status"] != "success" {
            bail!("query {expr}: {body}");
        }
        let result = &v["data"]["result"];
        let items = match v["data"]["resultType"].as_str() {
            Some("vector") => result.as_array().cloned().unwrap_or_default(),
            Some("scalar") => vec![serde_json::json!({"metric": {}, "value": result})],
            other => bail!("query {expr}: result type {other:?}"),
        };
        items
            .into_iter()
            .map(|item| {
                let value = item["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .context("a sample value")?;
                Ok((item["metric"].clone(), value))
            })
            .collect()
    }

    /// The firing alerts, as their label sets.
    pub fn firing(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self.get("/api/v1/alerts", &[])?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"].clone())
            .collect())
    }

    /// Poll `check` every half second until it returns Some, or fail after
    /// `limit` with the last error.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Self) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("nothing yet");
        loop {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {limit:?} (last: {last})");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
