//! The pieces of the request grammar checked by hand, byte by byte: what httparse leaves to
//! us (RFC 9110 §5.6 lists and tokens, RFC 3986's host), in one place so that the parser
//! above reads as the rules, not as loops.

/// Whether a Host value is `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2), which
/// §3.2 asks us to check: anything else gets 400. `Host: a, b` (two hosts folded into one
/// line, which a proxy might route by either: refused for its space) and `Host: evil/path`
/// are what this catches. (`a,b` without the space passes: ',' is a sub-delim, which RFC
/// 3986's reg-name allows, though no DNS name has one.)
/// An empty value is refused too: RFC 9112 §3.2 lets a client send one when the target has
/// no authority, which an origin-form request to a server always has; nginx refuses it.
pub(super) fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host_ok, rest) = match value.strip_prefix(b"[") {
        // An IP literal: an IPv6 address (or IPvFuture) in brackets.
        Some(inside) => match inside.iter().position(|&b| b == b']') {
            Some(end) => (
                end > 0
                    && inside[..end]
                        .iter()
                        .all(|&b| is_reg_name_byte(b) || b == b':'),
                &inside[end + 1..],
            ),
            None => (false, &[][..]),
        },
        // A name or an IPv4 address: neither can contain ':', so the first byte that is not
        // a reg-name byte ends it, and must be the port's ':' or the end. One pass.
        None => {
            let end = value
                .iter()
                .position(|&b| !is_reg_name_byte(b))
                .unwrap_or(value.len());
            (end > 0, &value[end..])
        }
    };
    let port_ok = match rest.strip_prefix(b":") {
        Some(port) => port.iter().all(u8::is_ascii_digit),
        None => rest.is_empty(),
    };
    host_ok && port_ok
}

/// RFC 3986 reg-name: unreserved, %-escapes (the '%' is checked loosely) and sub-delims.
/// A table, because every request's Host goes through here.
fn is_reg_name_byte(b: u8) -> bool {
    const TABLE: [bool; 256] = {
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let b = i as u8;
            table[i] = b.is_ascii_alphanumeric();
            i += 1;
        }
        let others = b"-._~%!$&'()*+,;=";
        let mut j = 0;
        while j < others.len() {
            table[others[j] as usize] = true;
            j += 1;
        }
        table
    };
    TABLE[usize::from(b)]
}

/// The comma-separated elements of a header value (RFC 9110 §5.6.1), trimmed, empty ones
/// skipped.
pub(super) fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// `1*DIGIT` as a u64; `None` for anything else, including a number too big for it.
pub(super) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &byte| {
        let digit = char::from(byte).to_digit(10)?;
        number.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A `tchar` of RFC 9110 §5.6.2, the bytes a method may have.
pub(super) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
