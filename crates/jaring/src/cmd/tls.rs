//! `jaring tls init|fingerprint`.

use anyhow::Context as _;
use jaring_tls::pki;

use crate::cli::TlsCommand;
use crate::{CmdResult, Failure};

/// Runs a `jaring tls` subcommand.
pub async fn run(command: TlsCommand) -> CmdResult {
    match command {
        TlsCommand::Init {
            dir,
            san,
            names,
            json,
        } => {
            let names = if names.is_empty() {
                vec!["server".to_owned()]
            } else {
                names
            };
            let sans = pki::default_sans(&san);
            let made = {
                let (dir, sans) = (dir.clone(), sans.clone());
                // Key generation and file writes: off the async workers.
                tokio::task::spawn_blocking(move || {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    pki::ensure_lab(&dir, &names, &sans)
                })
                .await
                .context("certificate generation stopped")?
                .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?
            };
            if json {
                let leaves: Vec<_> = made
                    .leaves
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "name": l.name,
                            "cert": l.cert,
                            "key": l.key,
                            "fingerprint": l.fingerprint.to_string(),
                        })
                    })
                    .collect();
                let v = serde_json::json!({
                    "dir": made.dir, "ca": made.ca, "created": made.created,
                    "names": sans, "leaves": leaves,
                });
                println!("{v}");
                return Ok(());
            }
            println!(
                "{} {}",
                if made.created { "made" } else { "kept" },
                made.dir.display()
            );
            println!("  CA (give clients --ca):  {}", made.ca.display());
            for l in &made.leaves {
                println!(
                    "  {}: {} + {}  ({})",
                    l.name,
                    l.cert.display(),
                    l.key.display(),
                    l.fingerprint
                );
            }
            println!("  valid for: {}", sans.join(", "));
            if let Some(l) = made.leaves.first() {
                println!(
                    "try:\n  jaring time serve --tls-cert {} --tls-key {}\n  jaring time client --tls --ca {}",
                    l.cert.display(),
                    l.key.display(),
                    made.ca.display()
                );
            }
            Ok(())
        }
        TlsCommand::Fingerprint { cert } => {
            let fp = jaring_tls::fingerprint_of_pem_file(&cert)
                .map_err(|e| Failure::Usage(anyhow::Error::new(e)))?;
            println!("{fp}");
            Ok(())
        }
    }
}
