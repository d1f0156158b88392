//! Validation of `tls = {...}` on frontends (certificates, SNI) — see `build_tls`.

use super::*;

pub(super) fn build_tls(cx: &mut Ctx<'_>, t: &S<RawTls>, mode: Mode) -> Option<TlsConfig> {
    let r = t.get_ref();
    if mode == Mode::Tcp {
        cx.err(
            t,
            "TLS termination needs mode = \"http\"",
            Some("for TLS pass-through use mode = \"tcp\" without `tls`"),
        );
        return None;
    }
    if r.certificates.get_ref().is_empty() {
        cx.err(
            &r.certificates,
            "no certificate given",
            Some("certificates = [{ cert = \"/etc/ssl/site.pem\", key = \"/etc/ssl/site.key\" }]"),
        );
        return None;
    }
    let mut certificates = Vec::new();
    for c in r.certificates.get_ref() {
        let pair = CertPair {
            cert: std::path::PathBuf::from(c.get_ref().cert.get_ref()),
            key: std::path::PathBuf::from(c.get_ref().key.get_ref()),
            ocsp_file: c.get_ref().ocsp_file.as_ref().map(|o| o.get_ref().into()),
        };
        if let (Some(o), Some(path)) = (&c.get_ref().ocsp_file, &pair.ocsp_file) {
            if let Err(e) = crate::tls::read_ocsp(path) {
                cx.err(
                    o,
                    e.to_string(),
                    Some("a DER OCSP response, e.g. from `openssl ocsp -respout FILE`"),
                );
            }
        }
        // Load now, so `fulcrum check` and a reload report a missing or
        // mismatched key at its place in the file.
        if let Err(e) = crate::tls::load_pair(&pair.cert, &pair.key) {
            let at = match &e {
                crate::tls::TlsError::NoKey { .. } | crate::tls::TlsError::BadKey { .. } => {
                    &c.get_ref().key
                }
                _ => &c.get_ref().cert,
            };
            cx.err(
                at,
                e.to_string(),
                Some("PEM files: the certificate chain (leaf first) and its private key"),
            );
        }
        certificates.push(pair);
    }
    let min_version = match &r.min_version {
        None => TlsVersion::V1_2,
        Some(v) => match v.get_ref().as_str() {
            "1.2" => TlsVersion::V1_2,
            "1.3" => TlsVersion::V1_3,
            other => {
                cx.err(
                    v,
                    format!("unsupported TLS version `{other}`"),
                    Some("use \"1.2\" or \"1.3\""),
                );
                TlsVersion::V1_2
            }
        },
    };
    Some(TlsConfig {
        certificates,
        min_version,
        http2: r.http2.unwrap_or(true),
        ticket_keys_file: r.ticket_keys_file.as_ref().and_then(|t| {
            let path = std::path::PathBuf::from(t.get_ref());
            match crate::tls::tickets::SharedTicketer::from_file(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    cx.err(
                        t,
                        e,
                        Some("one key per line: 64 hex digits, e.g. from `openssl rand -hex 32`"),
                    );
                    None
                }
            }
        }),
        prefer_server_ciphers: r.prefer_server_ciphers.unwrap_or(true),
    })
}
