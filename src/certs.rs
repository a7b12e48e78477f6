//! The lock etcd's certificates, as pure functions: one CA, a certificate its members serve
//! and peer with, and one client certificate per etcd user (etcd takes the user name from
//! the certificate's common name). `lockguard certs` stores them in Secrets.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA's common name: a CA re-read from its Secret is rebuilt from it (an issuer is its
/// subject and its key).
const CA_NAME: &str = "lockguard-etcd-ca";

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
#[error("certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

/// The CA that signs the rest.
pub struct Ca {
    pem: Pem,
    issuer: Issuer<'static, KeyPair>,
}

/// Validity: from a day before `today` (clocks differ) to `days` after it.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub today: (i32, u8, u8),
    pub days: i64,
}

impl Validity {
    /// From today (UTC), for `days` days.
    pub fn from_now(days: i64) -> Self {
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        Self { today: (today.year().into(), today.month() as u8, today.day() as u8), days }
    }

    /// The first and the last day, as (year, month, day).
    pub fn window(&self) -> ((i32, u8, u8), (i32, u8, u8)) {
        let (y, m, d) = self.today;
        let date = jiff::civil::date(y as i16, m as i8, d as i8);
        let ymd = |date: jiff::civil::Date| (i32::from(date.year()), date.month() as u8, date.day() as u8);
        let first = date.saturating_sub(jiff::Span::new().days(1));
        (ymd(first), ymd(date.saturating_add(jiff::Span::new().days(self.days))))
    }

    fn apply(&self, params: &mut CertificateParams) {
        let ((y0, m0, d0), (y1, m1, d1)) = self.window();
        params.not_before = rcgen::date_time_ymd(y0, m0, d0);
        params.not_after = rcgen::date_time_ymd(y1, m1, d1);
    }
}

/// The names a member's certificate is valid for: each member
/// `<service>-N.<service>.<namespace>.svc` (a wildcard: members come and go), the client
/// Service `<service>-client`, and loopback (for `etcdctl` inside a member's pod).
pub fn member_names(service: &str, namespace: &str) -> Vec<String> {
    let mut names = Vec::new();
    for suffix in ["svc", "svc.cluster.local"] {
        names.push(format!("*.{service}.{namespace}.{suffix}"));
        names.push(format!("{service}-client.{namespace}.{suffix}"));
    }
    names.extend([format!("{service}-client.{namespace}"), format!("{service}-client")]);
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    pub fn generate(validity: Validity) -> Result<Self, CertError> {
        let mut params = ca_params();
        validity.apply(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = Pem { cert: cert.pem(), key: key.serialize_pem() };
        Ok(Self { pem, issuer: Issuer::new(ca_params(), key) })
    }

    /// A CA made by `generate` earlier, from its certificate and key.
    pub fn from_pem(pem: Pem) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(&pem.key)?;
        Ok(Self { pem, issuer: Issuer::new(ca_params(), key) })
    }

    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// The certificate every member serves clients and peers with ([`member_names`]).
    pub fn member(&self, service: &str, namespace: &str, validity: Validity) -> Result<Pem, CertError> {
        let mut params = CertificateParams::new(member_names(service, namespace))?;
        params.distinguished_name.push(DnType::CommonName, service);
        // A member is a server to clients and peers, and a client to its peers.
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, validity)
    }

    /// A client certificate for etcd user `user`.
    pub fn client(&self, user: &str, validity: Validity) -> Result<Pem, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, validity)
    }

    fn sign(&self, mut params: CertificateParams, validity: Validity) -> Result<Pem, CertError> {
        validity.apply(&mut params);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validity() -> Validity {
        Validity { today: (2026, 12, 6), days: 3650 }
    }

    #[test]
    fn a_member_is_valid_for_every_name_clients_and_peers_use() {
        let names = member_names("lockguard-etcd", "lockguard-system");
        for name in [
            "*.lockguard-etcd.lockguard-system.svc",
            "*.lockguard-etcd.lockguard-system.svc.cluster.local",
            "lockguard-etcd-client.lockguard-system.svc",
            "lockguard-etcd-client",
            "127.0.0.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn validity_starts_a_day_early_and_lasts_the_days_asked() {
        let v = Validity { today: (2026, 12, 6), days: 3650 };
        assert_eq!(v.window(), ((2026, 12, 5), (2036, 12, 3)));
        let leap = Validity { today: (2028, 3, 1), days: 1 };
        assert_eq!(leap.window(), ((2028, 2, 29), (2028, 3, 2)));
    }

    #[test]
    fn certificates_are_pem_with_a_key_of_their_own() {
        let ca = Ca::generate(validity()).unwrap();
        let again = Ca::from_pem(ca.pem().clone()).unwrap();
        let (a, b) =
            (again.client("lockguard", validity()).unwrap(), again.client("lockguard", validity()).unwrap());
        assert!(a.cert.starts_with("-----BEGIN CERTIFICATE-----") && a.key.contains("PRIVATE KEY"));
        assert_ne!(a.key, b.key);
        assert!(again.member("lockguard-etcd", "ns", validity()).is_ok());
        // (That a CA read back signs certificates the original CA's clients accept is shown
        // against a real etcd in tests/etcd_tls.rs.)
    }
}
