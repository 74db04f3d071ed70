//! The chunk-line and trailer-line readers against every shape a smuggler tries.

use super::*;

const CAP: usize = 4096;

fn line(input: &[u8]) -> Result<Status<ChunkLine>, Error> {
    parse_chunk_line(input, CAP)
}

fn complete(size: u64, len: usize) -> Result<Status<ChunkLine>, Error> {
    Ok(Status::Complete(ChunkLine { size, len }))
}

/// Every prefix of a valid line is `Incomplete`, and the whole is complete, whatever
/// follows it.
fn assert_valid(input: &[u8], size: u64) {
    for end in 0..input.len() {
        assert_eq!(
            line(&input[..end]),
            Ok(Status::Incomplete),
            "{input:?} cut at {end}"
        );
    }
    assert_eq!(line(input), complete(size, input.len()), "{input:?}");
    let followed = [input, b"\nGET / HTTP/1.1\r\n"].concat();
    assert_eq!(
        line(&followed),
        complete(size, input.len()),
        "{input:?} + more"
    );
}

/// The line is an error once all of it is in, and the error does not wait for bytes
/// after the line: it is known by the end of `input`.
fn assert_invalid(input: &[u8], why: Error) {
    assert_eq!(line(input), Err(why), "{input:?}");
    let followed = [input, b"\r\n0\r\n\r\n"].concat();
    assert_eq!(line(&followed), Err(why), "{input:?} + more");
}

#[test]
fn plain_sizes_in_either_case_and_with_leading_zeros_are_read() {
    assert_valid(b"5\r\n", 5);
    assert_valid(b"0\r\n", 0);
    assert_valid(b"1a\r\n", 0x1a);
    assert_valid(b"1A\r\n", 0x1a);
    assert_valid(b"aBcDeF\r\n", 0xab_cdef);
    assert_valid(b"0005\r\n", 5);
    assert_valid(b"000000000000000000000000000000ff\r\n", 0xff);
    assert_valid(b"ffffffffffffffff\r\n", u64::MAX);
}

#[test]
fn extensions_with_the_whitespace_bws_allows_are_read() {
    for input in [
        &b"5;a\r\n"[..],
        b"5;a=b\r\n",
        b"5;a=b;c\r\n",
        b"5;a;b=c;d=\"e\"\r\n",
        b"5 ; a = \"q\\\"x\"\r\n",
        b"5\t;\ta\t=\tb\r\n",
        b"5 ;a\r\n",
        b"5; a\r\n",
        b"5;a =b\r\n",
        b"5;a= b\r\n",
        b"5;a=b ;c\r\n",
        b"5;a=\"\" ;c\r\n",
        b"5;a=\"\"\r\n",
        b"5;a=\"with space and\ttab\"\r\n",
        b"5;a=\"obs-text \x80\xff\"\r\n",
        b"5;a=\"\\\x80\\\t\\ \\\\\"\r\n",
        b"5;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\n",
    ] {
        assert_valid(input, 5);
    }
}

/// The shapes a lenient chunk parser lets through, each with why it matters.
#[test]
fn every_smuggling_shape_is_an_error() {
    use Error::*;
    let cases: &[(&[u8], Error, &str)] = &[
        // The issue's desync: nginx ends the line at the LF, httparse at the CRLF.
        (b"2;\nxx\r\n", BareLf, "bare LF after ';'"),
        (b"5;a=\"x\ny\"\r\n", BareLf, "bare LF inside a quoted value"),
        (b"5;a=b\n", BareLf, "line ended by a bare LF after a value"),
        (
            b"5\n",
            BareLf,
            "line ended by a bare LF right after the size",
        ),
        (
            b"5;\n",
            BareLf,
            "the issue's `5;` + bare LF, which used to wait forever",
        ),
        (b"5;a=\"\\\n\"\r\n", BareLf, "LF escaped by a backslash"),
        (
            b"5;a\rb\r\n",
            BareCr,
            "bare CR: some readers end lines at it",
        ),
        (b"5\r\r\n", BareCr, "CR CR LF"),
        (b"5;a=\"x\ry\"\r\n", Grammar, "CR inside quotes: not qdtext"),
        (b"5;\0\r\n", Control, "NUL where a name should be"),
        (
            b"5;a=\0\r\n",
            Control,
            "NUL value: C string parsers stop at it",
        ),
        (b"5;a\x01\r\n", Control, "C0 control in a name"),
        (b"5;a=\"\0\"\r\n", Control, "NUL in quotes: not qdtext"),
        (b"5;a=\"\x7f\"\r\n", Control, "DEL in quotes: not qdtext"),
        (
            b"5;a=\"\\\0\"\r\n",
            Control,
            "escaped NUL: quoted-pair excludes CTL",
        ),
        (b"5;a=\x0b\r\n", Control, "vertical tab is not BWS"),
        (b"5\x0c\r\n", Control, "form feed after the size"),
        (b"5;\r\n", Grammar, "bare ';': a name must follow"),
        (b"5;bad[=x\r\n", Grammar, "'[' is not a tchar"),
        (
            b"5 \r\n",
            Grammar,
            "whitespace before CRLF: BWS only precedes ';'",
        ),
        (b"5\t\r\n", Grammar, "HTAB before CRLF, the same"),
        (b"5;a \r\n", Grammar, "whitespace after a name, then CRLF"),
        (
            b"5;a=b \r\n",
            Grammar,
            "whitespace after a value, then CRLF",
        ),
        (
            b"5;a=\"b\" \r\n",
            Grammar,
            "whitespace after a quoted value",
        ),
        (b"5;a=\r\n", Grammar, "'=' without a value"),
        (b"5;a= \r\n", Grammar, "'=' and whitespace, no value"),
        (b"5;=b\r\n", Grammar, "a value without a name"),
        (b"5;a=b=c\r\n", Grammar, "two '='"),
        (b"5;a=\"b\"c\r\n", Grammar, "bytes after a closing quote"),
        (b"5;a=b\"c\"\r\n", Grammar, "a quote inside a token"),
        (b"5;a=\xff\r\n", Grammar, "obs-text outside quotes"),
        (b"5 5\r\n", Grammar, "two numbers: which is the size?"),
        (b"5,a\r\n", Grammar, "',' is not ';'"),
        (b"0x5\r\n", Grammar, "a C hex prefix"),
        (b";a\r\n", NoSize, "no size at all"),
        (b"\r\n", NoSize, "an empty line where a size must be"),
        (b" 5\r\n", NoSize, "whitespace before the size"),
        (b"+5\r\n", NoSize, "a sign"),
        (b"-1\r\n", NoSize, "a negative size"),
        (b"g\r\n", NoSize, "not a hex digit"),
        (b"\x005\r\n", NoSize, "NUL before the size"),
        (b"10000000000000000\r\n", SizeOverflow, "2^64 does not fit"),
        (b"fffffffffffffffff\r\n", SizeOverflow, "17 hex digits"),
    ];
    for &(input, why, what) in cases {
        assert_eq!(line(input), Err(why), "{what}: {input:?}");
    }
}

#[test]
fn an_error_is_reported_as_soon_as_its_byte_arrives() {
    // The bytes up to the bad one are a valid start; the bad one settles it, whatever
    // might come after.
    assert_invalid(b"5;\n", Error::BareLf);
    assert_invalid(b"2;\nxx", Error::BareLf);
    assert_invalid(b"5 \r", Error::Grammar);
    assert_invalid(b"5;a\0", Error::Control);
    assert_invalid(b"5;bad[", Error::Grammar);
    assert_invalid(b"5\rx", Error::BareCr);
    assert_eq!(line(b"5;a=\"x\n"), Err(Error::BareLf));
}

#[test]
fn a_valid_start_waits_for_more() {
    for input in [
        &b""[..],
        b"5",
        b"5 ",
        b"5;",
        b"5; ",
        b"5;a",
        b"5;a ",
        b"5;a=",
        b"5;a= ",
        b"5;a=\"",
        b"5;a=\"x\\",
        b"5;a=\"x\"",
        b"5;a=\"x\" ",
        b"5\r",
    ] {
        assert_eq!(line(input), Ok(Status::Incomplete), "{input:?}");
    }
}

#[test]
fn a_line_over_the_cap_is_an_error_even_before_its_end() {
    let mut long = b"1;".to_vec();
    long.resize(CAP - 2, b'x');
    long.extend_from_slice(b"\r\n");
    assert_eq!(line(&long), complete(1, CAP), "exactly the cap fits");
    long.insert(2, b'x');
    assert_eq!(line(&long), Err(Error::TooLong));
    assert_eq!(line(&long[..CAP]), Err(Error::TooLong), "no need to wait");
    assert_eq!(line(&long[..CAP - 1]), Ok(Status::Incomplete));
    let zeros = [&[b'0'; CAP][..], b"\r\n"].concat();
    assert_eq!(line(&zeros), Err(Error::TooLong));
}

#[test]
fn trailer_lines_are_field_lines_ending_in_crlf() {
    for input in [
        &b"X: a\r\n"[..],
        b"X:a\r\n",
        b"X:\r\n",
        b"X: \t a b \t\r\n",
        b"X-Sum: \x80\xff\r\n",
        b"X: GET / HTTP/1.1\r\n",
    ] {
        for end in 0..input.len() {
            assert_eq!(parse_trailer_line(&input[..end]), Ok(Status::Incomplete));
        }
        let field = Ok(Status::Complete(TrailerLine::Field(input.len())));
        assert_eq!(parse_trailer_line(input), field, "{input:?}");
    }
    let end = Ok(Status::Complete(TrailerLine::End));
    assert_eq!(parse_trailer_line(b"\r\nGET"), end);
    assert_eq!(parse_trailer_line(b"\r"), Ok(Status::Incomplete));
}

#[test]
fn every_bad_trailer_line_is_an_error() {
    use Error::*;
    let cases: &[(&[u8], Error, &str)] = &[
        (
            b"\n",
            BareLf,
            "the empty line as a bare LF: where does the body end?",
        ),
        (b"X: a\n", BareLf, "a field ended by a bare LF"),
        (
            b"X: a\nGET / HTTP/1.1\r\n",
            BareLf,
            "a request hidden behind a bare LF",
        ),
        (b"X: a\rb\r\n", BareCr, "bare CR in a value"),
        (b"\rX", BareCr, "CR not followed by LF"),
        (b"X: a\0\r\n", Control, "NUL in a value (RFC 9110 §5.5)"),
        (b"X: \x1b[0m\r\n", Control, "ESC in a value"),
        (b"X: \x7f\r\n", Control, "DEL in a value"),
        (b"X\r\n", Grammar, "no colon: not a field line"),
        (
            b"X : a\r\n",
            Grammar,
            "whitespace before the colon (RFC 9112 §5.1)",
        ),
        (b"X\t: a\r\n", Grammar, "HTAB before the colon, the same"),
        (b" X: a\r\n", Grammar, "obs-fold (RFC 9112 §5.2)"),
        (b"\tX: a\r\n", Grammar, "obs-fold with HTAB"),
        (b": a\r\n", Grammar, "an empty field name"),
        (b"X[: a\r\n", Grammar, "a name that is not a token"),
        (b"0\r\n", Grammar, "a second last-chunk: no colon"),
    ];
    for &(input, why, what) in cases {
        assert_eq!(parse_trailer_line(input), Err(why), "{what}: {input:?}");
    }
}
