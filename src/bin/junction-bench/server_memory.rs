//! The server's resident memory: from `/proc/<pid>/status` when the server runs here and its pid
//! is known, else from Junction's `/metrics` (`junction_process_resident_memory_bytes`).

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub enum ServerMemory {
    Proc(u32),
    Metrics(String),
}

impl ServerMemory {
    /// `base` is the target's `ws://host:port`.
    pub fn new(pid: Option<u32>, base: &str) -> ServerMemory {
        match pid {
            Some(pid) => ServerMemory::Proc(pid),
            None => {
                let authority = base.trim_start_matches("ws://");
                ServerMemory::Metrics(authority.split('/').next().unwrap_or(authority).to_owned())
            }
        }
    }

    pub fn source(&self) -> String {
        match self {
            ServerMemory::Proc(pid) => format!("/proc/{pid}/status"),
            ServerMemory::Metrics(host) => format!("http://{host}/metrics"),
        }
    }

    /// Resident bytes, or why they could not be read.
    pub async fn resident_bytes(&self) -> anyhow::Result<u64> {
        match self {
            ServerMemory::Proc(pid) => {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
                let kib: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .context("no VmRSS line")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()?;
                Ok(kib * 1024)
            }
            ServerMemory::Metrics(host) => {
                let body = http_get(host, "/metrics").await?;
                let line = body
                    .lines()
                    .find(|l| l.starts_with("junction_process_resident_memory_bytes "))
                    .context("/metrics has no junction_process_resident_memory_bytes")?;
                let value = line.rsplit(' ').next().unwrap_or_default();
                Ok(value.parse::<f64>()? as u64)
            }
        }
    }
}

/// A minimal HTTP/1.0 GET: enough for `/metrics`, without an HTTP client dependency.
async fn http_get(host: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {path}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// This process's resident memory (the load generator's own), for the report.
pub fn own_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// CPU time (user + system) a process has used, in seconds: `pid` or `"self"`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_second)
}

/// CPU used by the server (when its pid is known) and by this process over a stretch of time.
pub struct CpuMeter {
    server_pid: Option<u32>,
    server_start: Option<f64>,
    own_start: Option<f64>,
    started: std::time::Instant,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server_pid,
            server_start: server_pid.and_then(|pid| cpu_seconds(&pid.to_string())),
            own_start: cpu_seconds("self"),
            started: std::time::Instant::now(),
        }
    }

    /// Cores busy on average since `start`: (server, load generator); the server's is `None`
    /// without its pid.
    pub fn cores(&self) -> (Option<f64>, Option<f64>) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let server = self
            .server_pid
            .and_then(|pid| cpu_seconds(&pid.to_string()))
            .zip(self.server_start)
            .map(|(now, start)| (now - start) / elapsed);
        let own = cpu_seconds("self").zip(self.own_start).map(|(now, start)| (now - start) / elapsed);
        (server, own)
    }
}
