//! TLS to Redis with certificates of your own: a private CA, a client certificate (mutual
//! TLS).

use std::{fmt, io, path::Path};

/// Certificates for `rediss://` connections
/// ([`RedisSessionBuilder::redis_tls`](crate::RedisSessionBuilder::redis_tls)), in PEM.
///
/// Without it, a `rediss://` URL verifies the server against the public web PKI (the
/// Mozilla roots compiled into the crate, as browsers do), which is what managed services
/// need. A Redis whose certificate comes from a private CA needs that CA here
/// ([`root_certificates_pem`](Self::root_certificates_pem)); a Redis that asks clients for
/// a certificate (`tls-auth-clients yes`) needs one here too
/// ([`client_certificate_pem`](Self::client_certificate_pem)). The server's name is checked
/// against the host of the URL, so connect by the name (or IP address) the certificate was
/// issued for.
///
/// Verification can be turned off with the URL fragment `#insecure`
/// (`rediss://host:6380/#insecure`): anyone on the path can then read and change every
/// session. [`build`](crate::RedisSessionBuilder::build) warns when it is used, and the
/// [`production`](crate::RedisSessionBuilder::production) and
/// [`high_security`](crate::RedisSessionBuilder::high_security) presets refuse it.
///
/// `Debug` shows which parts are set, never a key.
///
/// # Examples
///
/// ```no_run
/// use actix_redis_session::{store::RedisTls, Key, RedisSession};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = RedisTls::new()
///     .root_certificates_file("/etc/redis/tls/ca.crt")?
///     .client_certificate_files("/etc/redis/tls/client.crt", "/etc/redis/tls/client.key")?;
/// let sessions = RedisSession::builder("rediss://redis.internal:6380", Key::generate())
///     .redis_tls(tls)
///     .build()?;
/// # drop(sessions);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct RedisTls {
    pub(crate) root_certificates: Option<Vec<u8>>,
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("root_certificates", &self.root_certificates.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// No certificates yet: the public roots, no client certificate.
    pub fn new() -> RedisTls {
        RedisTls::default()
    }

    /// Trust these CA certificates (PEM, one or more) instead of the public roots.
    pub fn root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> RedisTls {
        self.root_certificates = Some(pem.into());
        self
    }

    /// [`root_certificates_pem`](Self::root_certificates_pem) from a file.
    ///
    /// # Errors
    ///
    /// The file cannot be read.
    pub fn root_certificates_file(self, path: impl AsRef<Path>) -> io::Result<RedisTls> {
        Ok(self.root_certificates_pem(std::fs::read(path)?))
    }

    /// Present this client certificate (PEM) and its private key (PEM: PKCS#8, PKCS#1 or
    /// SEC1) when the server asks for one.
    pub fn client_certificate_pem(
        mut self,
        certificate: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> RedisTls {
        self.client = Some((certificate.into(), key.into()));
        self
    }

    /// [`client_certificate_pem`](Self::client_certificate_pem) from files.
    ///
    /// # Errors
    ///
    /// A file cannot be read.
    pub fn client_certificate_files(
        self,
        certificate: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<RedisTls> {
        let certificate = std::fs::read(certificate)?;
        let key = std::fs::read(key)?;
        Ok(self.client_certificate_pem(certificate, key))
    }

    /// Whether each part given holds what it should: at least one certificate, and a
    /// private key. (redis-rs takes a PEM without any certificate in it as no certificate.)
    pub(crate) fn is_pem(&self) -> bool {
        let has = |pem: &[u8], label: &str| {
            String::from_utf8_lossy(pem)
                .lines()
                .any(|line| line.starts_with("-----BEGIN ") && line.contains(label))
        };
        self.root_certificates
            .as_deref()
            .is_none_or(|pem| has(pem, "CERTIFICATE-----"))
            && self.client.as_ref().is_none_or(|(cert, key)| {
                has(cert, "CERTIFICATE-----") && has(key, "PRIVATE KEY-----")
            })
    }

    #[cfg(feature = "tls")]
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.root_certificates.clone(),
        }
    }
}
