//! Reading the session cookie of a request: signed ids, or a sealed session.

use actix_web::{dev::ServiceRequest, http::header};

use crate::{
    config::SessionConfig,
    cookie::{self, cookie_values, Verified},
    record::now_ms,
    store::cookie::{Opened, Refused, Sealer},
};

/// Distinct values of our cookie whose MAC is checked per request, at most: a request may
/// carry several (set for other paths or domains), but thousands of copies are someone
/// burning our CPU. Values that fail the cheap checks first (length, base64, size) do not
/// count, so that junk planted by a sibling subdomain cannot push the live cookie out cheaply.
const MAX_COOKIE_VALUES: usize = 8;

/// Validly signed ids looked up per request, at most: the first one the store knows wins.
const MAX_CANDIDATES: usize = 3;

/// The session cookie of a request.
pub(super) enum Incoming {
    Absent,
    /// No validly signed value.
    Rejected,
    /// The validly signed ids, in the order the cookies came (the first apart: most requests
    /// have one, and it costs no allocation).
    Valid {
        first: Verified,
        rest: Vec<Verified>,
    },
    /// A sealed session that opened and has not expired
    /// ([`CookieStore`](crate::store::CookieStore)).
    Sealed(Box<Opened>),
    /// None of ours, but a valid actix-session cookie ([`crate::FromActixSession`]): the
    /// Redis key of the session it names.
    Foreign(String),
}

/// Finds our cookie in the Cookie header(s) without building the request's cookie jar:
/// our values are base64url, so there is nothing to percent-decode, and a header that is
/// not UTF-8 or holds malformed pairs still yields a well-formed session cookie.
///
/// Several cookies of that name can arrive (set for other paths or domains, by this app or
/// another on the same site): each distinct value is verified, up to
/// [`MAX_COOKIE_VALUES`] MAC checks, and the validly signed ones are kept in order, up to
/// [`MAX_CANDIDATES`], so that a dead session's cookie cannot hide the live one. The
/// answer also says whether exactly one value came.
pub(super) fn read_signed(config: &SessionConfig, req: &ServiceRequest) -> (Incoming, bool) {
    let name = config.cookie.name.as_bytes();
    // Fixed-size: most requests carry one cookie, and none should cost an allocation.
    let mut seen: [&[u8]; MAX_COOKIE_VALUES] = [&[]; MAX_COOKIE_VALUES];
    let mut checked = 0;
    let mut values = 0;
    let mut first = None;
    let mut rest = Vec::new();
    for value in req
        .headers()
        .get_all(header::COOKIE)
        .flat_map(|h| cookie_values(h.as_bytes(), name))
    {
        values += 1;
        let candidates = usize::from(first.is_some()) + rest.len();
        if seen[..checked].contains(&value)
            || checked == MAX_COOKIE_VALUES
            || candidates == MAX_CANDIDATES
        {
            continue;
        }
        let verified = std::str::from_utf8(value)
            .map_err(|_| cookie::Rejected::Malformed)
            .and_then(|value| config.signer.verify(value));
        if !matches!(verified, Err(ref why) if why.is_cheap()) {
            seen[checked] = value;
            checked += 1;
        }
        match verified {
            Ok(verified) if first.is_none() => first = Some(verified),
            Ok(verified) => rest.push(verified),
            Err(why) => tracing::debug!(reason = ?why, "session cookie rejected"),
        }
    }
    let only_one = values == 1;
    let incoming = match (first, values) {
        (Some(first), _) => Incoming::Valid { first, rest },
        (None, 0) => Incoming::Absent,
        (None, _) => Incoming::Rejected,
    };
    (incoming, only_one)
}

/// Finds a sealed session in the cookies of our name: the first value that opens and has not
/// expired. As for signed ids, each distinct well-formed value costs one decryption, at most
/// [`MAX_COOKIE_VALUES`] of them; malformed values cost none and do not count. The answer
/// also says whether exactly one value came.
pub(super) fn read_sealed(
    config: &SessionConfig,
    sealer: &Sealer,
    req: &ServiceRequest,
) -> (Incoming, bool) {
    let name = config.cookie.name.as_bytes();
    let now = now_ms();
    let mut seen: [&[u8]; MAX_COOKIE_VALUES] = [&[]; MAX_COOKIE_VALUES];
    let mut checked = 0;
    let mut values = 0;
    let mut opened = None;
    for value in req
        .headers()
        .get_all(header::COOKIE)
        .flat_map(|h| cookie_values(h.as_bytes(), name))
    {
        values += 1;
        if opened.is_some() || checked == MAX_COOKIE_VALUES || seen[..checked].contains(&value) {
            continue;
        }
        match sealer.try_open(value) {
            Err(Refused::Malformed) => {}
            Err(Refused::Unsealed) => {
                seen[checked] = value;
                checked += 1;
            }
            Ok(candidate) => {
                seen[checked] = value;
                checked += 1;
                // An expired copy (set for another path, say) must not hide a live one.
                if super::sealed::is_live(config, &candidate, now) {
                    opened = Some(candidate);
                }
            }
        }
    }
    let incoming = match (opened, values) {
        (Some(opened), _) => Incoming::Sealed(Box::new(opened)),
        (None, 0) => Incoming::Absent,
        (None, _) => {
            tracing::debug!("sealed session cookie rejected or expired");
            Incoming::Rejected
        }
    };
    (incoming, values == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[::core::prelude::v1::test]
    fn cookie_values_are_found_in_any_position_and_form() {
        let values = |header: &[u8]| -> Vec<Vec<u8>> {
            cookie_values(header, b"sid").map(<[u8]>::to_vec).collect()
        };
        assert_eq!(values(b"sid=a.b"), [b"a.b".to_vec()]);
        assert_eq!(values(b"x=1; sid=a.b; y=2"), [b"a.b".to_vec()]);
        assert_eq!(values(b"x=1;sid=\"a.b\" ;y"), [b"a.b".to_vec()]);
        assert_eq!(values(b" sid = a.b "), [b"a.b".to_vec()]);
        assert_eq!(
            values(b"sid=one; other=x; sid=two"),
            [b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(values(b"sid=a=b"), [b"a=b".to_vec()]);
        assert_eq!(values(b"sid="), [Vec::<u8>::new()]);
        assert!(values(b"sidx=1; xsid=2; sid; =sid").is_empty());
        assert_eq!(
            values(b"\xff\xfe=1; sid=\xff.\x00"),
            [b"\xff.\x00".to_vec()]
        );
        assert!(values(b"").is_empty());
    }
}
