//! The identity a verified client certificate carries (mTLS): subject and alternative names.

use x509_parser::extensions::GeneralName;

pub struct CertIdentity {
    /// The subject as an RFC 4514 string, such as `CN=billing,O=Example`.
    pub subject: Option<String>,
    /// DNS, URI (SPIFFE ids) and e-mail alternative names.
    pub sans: Vec<String>,
}

/// Reads subject and SANs from a DER certificate; an unparsable certificate yields nothing
/// (rustls already verified it, so this only loses the description).
pub fn describe(der: &[u8]) -> CertIdentity {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return CertIdentity {
            subject: None,
            sans: Vec::new(),
        };
    };
    let subject = Some(cert.subject().to_string()).filter(|s| !s.is_empty());
    let sans = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(n) => Some(format!("DNS:{n}")),
                    GeneralName::URI(u) => Some(format!("URI:{u}")),
                    GeneralName::RFC822Name(e) => Some(format!("email:{e}")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    CertIdentity { subject, sans }
}
