//! TLS for PostgreSQL URLs, libpq-style: `sslmode=require` (and `verify-ca`, `verify-full`)
//! connect over TLS and always verify the server's certificate (unlike libpq's `require`):
//! against the system's roots and Mozilla's, or the CA file in `sslrootcert`.

use crate::db::DbError;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Splits the URL into what tokio-postgres understands and the TLS connector to use.
pub fn from_url(url: &str) -> Result<(String, Option<MakeRustlsConnect>), DbError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut sslmode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => sslmode = Some(value.to_owned()),
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            _ => kept.push(pair.to_owned()),
        }
    }
    let tokio_mode = match sslmode.as_deref() {
        None | Some("disable") | Some("allow") => None,
        Some("prefer") => Some("prefer"),
        Some("require") | Some("verify-ca") | Some("verify-full") => Some("require"),
        Some(other) => {
            return Err(DbError::InvalidUrl(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    let Some(tokio_mode) = tokio_mode else {
        let url = join(base, &kept);
        return Ok((url, None));
    };
    kept.push(format!("sslmode={tokio_mode}"));
    let config = client_config(root_cert.as_deref())?;
    Ok((join(base, &kept), Some(MakeRustlsConnect::new(config))))
}

fn client_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig, DbError> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| DbError::InvalidUrl(format!("cannot read sslrootcert {path}: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    DbError::InvalidUrl(format!("sslrootcert {path} is not PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    DbError::InvalidUrl(format!("sslrootcert {path} has a bad certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(DbError::InvalidUrl(format!(
                    "sslrootcert {path} holds no certificate"
                )));
            }
        }
        None => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            // System roots are a bonus (corporate CAs); an unreadable store is not fatal.
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::InvalidUrl(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn join(base: &str, params: &[String]) -> String {
    if params.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", params.join("&"))
    }
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_get_no_tls() {
        let (url, tls) = from_url("postgres://u@127.0.0.1/db").unwrap();
        assert_eq!(url, "postgres://u@127.0.0.1/db");
        assert!(tls.is_none());
        let (url, tls) =
            from_url("postgres://u@127.0.0.1/db?sslmode=disable&application_name=x").unwrap();
        assert_eq!(url, "postgres://u@127.0.0.1/db?application_name=x");
        assert!(tls.is_none());
    }

    #[test]
    fn require_and_verify_modes_use_tls() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let (url, tls) = from_url(&format!(
                "postgres://u@h/db?sslmode={mode}&channel_binding=require"
            ))
            .unwrap();
            assert_eq!(
                url,
                "postgres://u@h/db?channel_binding=require&sslmode=require"
            );
            assert!(tls.is_some());
        }
    }

    #[test]
    fn bad_mode_and_missing_ca_are_errors() {
        assert!(from_url("postgres://h/db?sslmode=maybe").is_err());
        assert!(
            from_url("postgres://h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem").is_err()
        );
    }
}
