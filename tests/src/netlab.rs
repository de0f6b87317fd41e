//! Test hosts made of network namespaces: a server side (the SFU, coturn and
//! an HTTP proxy, each on its own address) and a client side joined to it by
//! a veth pair, whose outgoing traffic an nftables ruleset filters like a
//! corporate firewall. Needs root, `ip`, `nft`, `turnserver` (coturn) and
//! `tinyproxy`; a missing one fails the test with the package to install.
//!
//! Each lab has its own namespaces and `/etc/netns/<name>/hosts` (which
//! `ip netns exec` binds over `/etc/hosts`), so names like
//! `turn.parley.test` resolve inside the lab only; everything is removed
//! when the lab is dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

pub const SFU_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub const TURN_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
pub const PROXY_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 4);
pub const SFU_HOST: &str = "sfu.parley.test";
pub const TURN_HOST: &str = "turn.parley.test";
pub const PROXY_PORT: u16 = 3128;
/// Proxy credentials the lab's proxy demands.
pub const PROXY_USER: &str = "qa";
pub const PROXY_PASSWORD: &str = "lab-proxy";
/// The secret coturn and the SFU share (coturn's REST scheme).
pub const TURN_SECRET: &str = "lab-turn-secret";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Runs a command to completion, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Fails loudly when a tool the lab needs is missing.
pub fn require_tools() -> anyhow::Result<()> {
    let uid = std::process::Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("network-namespace tests need root (CI runs them as root)");
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("turnserver", "coturn"),
        ("tinyproxy", "tinyproxy"),
    ] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !found {
            bail!("`{tool}` is missing: apt-get install {package} (cargo xtask test does)");
        }
    }
    Ok(())
}

/// A CA and one server certificate for both lab names, as PEM files.
#[derive(Debug)]
pub struct LabCertificates {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn make_certificates(dir: &Path) -> anyhow::Result<LabCertificates> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Parley lab CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf_params = rcgen::CertificateParams::new(vec![SFU_HOST.into(), TURN_HOST.into()])?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    let certificates = LabCertificates {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certificates.ca, ca_cert.pem())?;
    std::fs::write(&certificates.cert, leaf.pem())?;
    std::fs::write(&certificates.key, leaf_key.serialize_pem())?;
    Ok(certificates)
}

/// See the module docs.
#[derive(Debug)]
pub struct NetLab {
    pub server_ns: String,
    pub client_ns: String,
    pub dir: tempfile::TempDir,
    pub certificates: LabCertificates,
    services: Vec<Child>,
}

impl NetLab {
    /// Builds the two hosts and their link; no firewall yet.
    pub fn new() -> anyhow::Result<Self> {
        require_tools()?;
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let server_ns = format!("pls{id}");
        let client_ns = format!("plc{id}");
        let dir = tempfile::tempdir()?;
        let certificates = make_certificates(dir.path())?;
        let lab = Self {
            server_ns,
            client_ns,
            dir,
            certificates,
            services: Vec::new(),
        };
        lab.build(&id).context("building the lab network")?;
        Ok(lab)
    }

    fn build(&self, id: &str) -> anyhow::Result<()> {
        let (server, client) = (self.server_ns.as_str(), self.client_ns.as_str());
        let (server_if, client_if) = (format!("vs{id}"), format!("vc{id}"));
        run("ip", &["netns", "add", server])?;
        run("ip", &["netns", "add", client])?;
        run(
            "ip",
            &[
                "link", "add", &server_if, "type", "veth", "peer", "name", &client_if,
            ],
        )?;
        run("ip", &["link", "set", &server_if, "netns", server])?;
        run("ip", &["link", "set", &client_if, "netns", client])?;
        for ip in [SFU_IP, TURN_IP, PROXY_IP] {
            run(
                "ip",
                &[
                    "-n",
                    server,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    &server_if,
                ],
            )?;
        }
        run(
            "ip",
            &[
                "-n",
                client,
                "addr",
                "add",
                &format!("{CLIENT_IP}/24"),
                "dev",
                &client_if,
            ],
        )?;
        for (ns, interface) in [(server, &server_if), (client, &client_if)] {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", &["-n", ns, "link", "set", interface, "up"])?;
            let etc = PathBuf::from("/etc/netns").join(ns);
            std::fs::create_dir_all(&etc)?;
            std::fs::write(
                etc.join("hosts"),
                format!("127.0.0.1 localhost\n{SFU_IP} {SFU_HOST}\n{TURN_IP} {TURN_HOST}\n"),
            )?;
        }
        Ok(())
    }

    /// Replaces the client host's outgoing firewall with `rules` (the body
    /// of an nftables `output` chain whose policy is `policy`).
    pub fn firewall(&self, policy: &str, rules: &str) -> anyhow::Result<()> {
        let ruleset = format!(
            "table inet lab_firewall\ndelete table inet lab_firewall\n\
             table inet lab_firewall {{\n  chain output {{\n    \
             type filter hook output priority 0; policy {policy};\n{rules}\n  }}\n}}\n"
        );
        let path = self.dir.path().join("firewall.nft");
        std::fs::write(&path, ruleset)?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.client_ns,
                "nft",
                "-f",
                path.to_str().context("path")?,
            ],
        )
    }

    /// A command that runs `program` on the given host.
    pub fn command(&self, netns: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(program);
        command.kill_on_drop(true);
        command
    }

    /// Starts coturn on the TURN address: UDP and TCP on 3478, TLS on 443,
    /// relaying only to the SFU.
    pub async fn start_coturn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.path().join("coturn.log"))?;
        let certificates = &self.certificates;
        let child = self
            .command(&self.server_ns, Path::new("/usr/bin/turnserver"))
            .args(["-n", "--no-cli", "--no-dtls", "--fingerprint"])
            .args(["--listening-ip", &TURN_IP.to_string()])
            .args(["--relay-ip", &TURN_IP.to_string()])
            .args(["--listening-port", "3478", "--tls-listening-port", "443"])
            .args(["--min-port", "50000", "--max-port", "50200"])
            .args(["--use-auth-secret", "--static-auth-secret", TURN_SECRET])
            .args(["--realm", "parley.test"])
            .arg("--cert")
            .arg(&certificates.cert)
            .arg("--pkey")
            .arg(&certificates.key)
            // Only the SFU may be a peer: the production configuration's shape.
            .args(["--denied-peer-ip", "0.0.0.0-255.255.255.255"])
            .args(["--allowed-peer-ip", &SFU_IP.to_string()])
            .args(["--log-file", "stdout", "--simple-log"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting turnserver")?;
        self.services.push(child);
        self.wait_listening(&self.server_ns, 443).await
    }

    /// Starts tinyproxy on the proxy address, allowing CONNECT to 443 only,
    /// with basic authentication.
    pub async fn start_proxy(&mut self) -> anyhow::Result<()> {
        let config = self.dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "User root\nGroup root\nListen {PROXY_IP}\nPort {PROXY_PORT}\nTimeout 60\n\
                 MaxClients 50\nAllow 10.99.0.0/24\nConnectPort 443\n\
                 BasicAuth {PROXY_USER} {PROXY_PASSWORD}\nLogLevel Info\n"
            ),
        )?;
        let log = std::fs::File::create(self.dir.path().join("tinyproxy.log"))?;
        let child = self
            .command(&self.server_ns, Path::new("/usr/bin/tinyproxy"))
            .args(["-d", "-c"])
            .arg(&config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting tinyproxy")?;
        self.services.push(child);
        self.wait_listening(&self.server_ns, PROXY_PORT).await
    }

    /// Waits until something listens on TCP `port` on the given host.
    pub async fn wait_listening(&self, netns: &str, port: u16) -> anyhow::Result<()> {
        for _ in 0..100 {
            let output = std::process::Command::new("ip")
                .args(["netns", "exec", netns, "ss", "-Hltn"])
                .arg(format!("sport = :{port}"))
                .output()?;
            if !String::from_utf8_lossy(&output.stdout).trim().is_empty() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("nothing listens on port {port} in {netns}")
    }

    /// A service's log, for failure messages.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for child in &mut self.services {
            let _ = child.start_kill();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            // Deleting a namespace removes its end of the veth, and so the pair.
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(ns));
        }
    }
}
