//! Helpers for testkit's own tests of its mocks.

/// A client as the self-tests want one: no proxy, no redirects followed, no decompression.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("mdl-test/0.1")
        .no_gzip()
        .build()
        .unwrap()
}

/// The text of response header `name`, if present.
pub(crate) fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// A gzip body decoded as text.
pub(crate) fn gunzip(raw: &[u8]) -> String {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(raw), &mut s).unwrap();
    s
}
