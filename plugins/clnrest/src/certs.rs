//! The TLS identity clnrest serves with: CLN's six files (`ca.pem`, `ca-key.pem`,
//! `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`), the same names and
//! roles cln-grpc uses, so that a node running both shares one CA. When any is missing or
//! empty all six are made anew: a self-signed CA, and a server and a client certificate
//! signed by it. The server's names are `cln`, `localhost` and `clnrest-host` when that is
//! an IP address. Private keys are written readable by the owner only.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

/// Whether all six files are there and not empty.
pub fn complete(dir: &Path) -> bool {
    FILES
        .iter()
        .all(|f| fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0))
}

fn write(path: &Path, data: &[u8], private: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(tmp, path)
}

fn names(first: &str) -> Vec<String> {
    vec![first.to_owned(), "cln".to_owned(), "localhost".to_owned()]
}

/// Makes the CA, server and client certificates in `dir` (created if needed).
pub fn generate(dir: &Path, host: &str) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: rcgen::Error| format!("{what}: {err}")
    };
    let mut ca = CertificateParams::new(names("cln Root REST CA")).map_err(e("CA"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages.push(KeyUsagePurpose::KeyCertSign);
    ca.use_authority_key_identifier_extension = true;
    let ca_key = KeyPair::generate().map_err(e("CA key"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e("CA"))?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let mut server = CertificateParams::new(names("cln rest server")).map_err(e("server"))?;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
    ];
    server.use_authority_key_identifier_extension = true;
    server.distinguished_name = DistinguishedName::new();
    server
        .distinguished_name
        .push(DnType::CommonName, "cln rest server");
    if let Ok(ip) = host.parse::<IpAddr>() {
        server.subject_alt_names.push(SanType::IpAddress(ip));
    }
    let server_key = KeyPair::generate().map_err(e("server key"))?;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .map_err(e("server"))?;

    let mut client = CertificateParams::new(names("cln rest client")).map_err(e("client"))?;
    client.distinguished_name = DistinguishedName::new();
    client
        .distinguished_name
        .push(DnType::CommonName, "cln rest client");
    let client_key = KeyPair::generate().map_err(e("client key"))?;
    let client_cert = client
        .signed_by(&client_key, &issuer)
        .map_err(e("client"))?;

    let io = |err: std::io::Error| format!("cannot write certificates in {}: {err}", dir.display());
    fs::create_dir_all(dir).map_err(io)?;
    let files: [(&str, String, bool); 6] = [
        ("ca.pem", ca_cert.pem(), false),
        ("ca-key.pem", ca_key.serialize_pem(), true),
        ("server.pem", server_cert.pem(), false),
        ("server-key.pem", server_key.serialize_pem(), true),
        ("client.pem", client_cert.pem(), false),
        ("client-key.pem", client_key.serialize_pem(), true),
    ];
    for (name, data, private) in files {
        write(&dir.join(name), data.as_bytes(), private).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_files_with_private_keys_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("clnrest-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(!complete(&dir));
        generate(&dir, "127.0.0.1").unwrap();
        assert!(complete(&dir));
        let mode = fs::metadata(dir.join("server-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pem = fs::read_to_string(dir.join("server.pem")).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
