//! A test certificate authority made with `rcgen`: a CA and server certificates for
//! `localhost` and 127.0.0.1, written as PEM files for the processes under test.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

/// A CA whose certificate lives in `dir/ca.pem`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A server's certificate (chain: the leaf) and key files.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        std::fs::write(dir.join("ca.pem"), cert.pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_owned(),
        })
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `localhost` and 127.0.0.1, written as `dir/<name>.crt` and
    /// `dir/<name>.key`.
    pub fn server(&self, name: &str) -> Result<ServerCert> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let out = ServerCert {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&out.cert, cert.pem())?;
        std::fs::write(&out.key, key.serialize_pem())?;
        Ok(out)
    }
}
