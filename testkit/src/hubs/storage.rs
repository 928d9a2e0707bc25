//! The two hosts of every hub mock ([`Mock`]), and the storage / CDN host each hub mock runs
//! beside its API (Hugging Face's CDN, ModelScope's
//! OSS, Civitai's S3/R2 storage): objects served from signed, expiring URLs, with `Range`, a
//! fault queue, a throttle and an ignore-`Range` switch. Each hub supplies its
//! [`StorageRules`]: how its real storage host checks methods and credentials, names its
//! signature parameter, refuses a signature and decorates its answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};

use super::common::{hv, query_get, query_pairs, xml_error, SignError, Signed, Signer};
use crate::serve::entity::{serve_entity, Entity};
use crate::serve::fault::FaultQueue;
use crate::serve::host::{handler, Bound, Host};
use crate::serve::log::RequestLog;
use crate::serve::{lock, Fault, Request, RequestRecord, Response};

/// S3's and OSS's message for a signature that does not verify.
pub(crate) const SIGNATURE_MISMATCH: &str =
    "The request signature we calculated does not match the signature you provided.";

/// S3-style `405` for anything but `GET` and `HEAD` (for [`StorageRules::admit`]).
pub(crate) fn only_get_and_head(method: &Method) -> Option<Response> {
    (method != Method::GET && method != Method::HEAD).then(|| {
        xml_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        )
    })
}

/// What differs between the hubs' storage hosts.
pub(crate) struct StorageRules {
    /// The host's label in the request log.
    pub(crate) label: &'static str,
    /// Method and credential checks, in the order the real host makes them: an answer
    /// refuses the request.
    pub(crate) admit: fn(&Method, &HeaderMap) -> Option<Response>,
    /// The query parameter that carries the signature.
    pub(crate) signature_param: &'static str,
    /// The answer to an expired or invalid signature.
    pub(crate) refuse: fn(SignError) -> Response,
    /// `Last-Modified` of every object (Unix seconds).
    pub(crate) last_modified: u64,
    /// The headers of an object's answers (at least `ETag`; vendor headers, a `Content-Type`
    /// other than `application/octet-stream`), from its key, its content and the decoded
    /// query.
    pub(crate) headers: fn(&str, &Bytes, &[(String, String)]) -> HeaderMap,
}

/// A running storage host.
pub(crate) struct StorageHost {
    host: Host,
    store: Arc<Store>,
}

/// The objects and switches of one storage host.
struct Store {
    rules: StorageRules,
    /// Key (the URL path) -> content.
    objects: Mutex<HashMap<String, Bytes>>,
    signer: Signer,
    faults: FaultQueue,
    ignore_range: AtomicBool,
    throttle: Mutex<Option<u64>>,
}

impl StorageHost {
    /// Starts a storage host on `127.0.0.1:0` that logs into `log`.
    pub(crate) fn start(rules: StorageRules, log: RequestLog) -> StorageHost {
        let label = rules.label;
        let store = Arc::new(Store {
            rules,
            objects: Mutex::new(HashMap::new()),
            signer: Signer::new(),
            faults: FaultQueue::default(),
            ignore_range: AtomicBool::new(false),
            throttle: Mutex::new(None),
        });
        let host = Bound::new().serve(label, log, handler(store.clone(), serve_object));
        StorageHost { host, store }
    }

    /// `http://127.0.0.1:PORT` of the host.
    pub(crate) fn base_url(&self) -> String {
        self.host.base_url()
    }

    /// Stores `content` under `key` (a path starting with `/`).
    pub(crate) fn put(&self, key: String, content: Bytes) {
        lock(&self.store.objects).insert(key, content);
    }

    /// Signs `key` for a URL.
    pub(crate) fn sign(&self, key: &str) -> Signed {
        self.store.signer.sign(key)
    }

    /// Expires every URL signed so far (`403` from now on).
    pub(crate) fn expire_signed_urls(&self) {
        self.store.signer.expire_all();
    }

    /// Lifetime of URLs signed from now on.
    pub(crate) fn set_signed_url_ttl(&self, ttl: Duration) {
        self.store.signer.set_ttl(ttl);
    }

    /// Stored bytes handed to connections so far.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.host.bytes_sent()
    }

    /// Queues a fault for the next `GET`.
    pub(crate) fn inject_fault(&self, fault: Fault) {
        self.store.faults.extend([fault]);
    }

    /// Ignore `Range` and answer `200` with the whole object.
    pub(crate) fn set_ignore_range(&self, on: bool) {
        self.store.ignore_range.store(on, Ordering::SeqCst);
    }

    /// Limits bodies to `bytes_per_sec` (`None`: unlimited).
    pub(crate) fn set_throttle(&self, bytes_per_sec: Option<u64>) {
        *lock(&self.store.throttle) = bytes_per_sec;
    }
}

/// Admission, the object, its signature, then its bytes.
async fn serve_object(store: Arc<Store>, req: Request) -> Response {
    let rules = &store.rules;
    if let Some(refused) = (rules.admit)(req.method(), req.headers()) {
        return refused;
    }
    let key = req.uri().path();
    let Some(content) = lock(&store.objects).get(key).cloned() else {
        return xml_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    let q = query_pairs(req.uri());
    if let Err(e) = store
        .signer
        .verify(key, query_get(&q, rules.signature_param))
    {
        return (rules.refuse)(e);
    }
    let entity = store.entity(key, content, &q);
    let fault = (req.method() == Method::GET)
        .then(|| store.faults.pop())
        .flatten();
    serve_entity(req.method(), req.headers(), entity, fault)
}

impl Store {
    /// An object as the serving core sees it: the hub's headers plus the signed URL's
    /// `response-content-disposition`.
    fn entity(&self, key: &str, content: Bytes, q: &[(String, String)]) -> Entity {
        let mut headers = (self.rules.headers)(key, &content, q);
        if !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        if let Some(cd) = query_get(q, "response-content-disposition") {
            headers.insert(header::CONTENT_DISPOSITION, hv(cd));
        }
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let last_modified = UNIX_EPOCH + Duration::from_secs(self.rules.last_modified);
        headers.insert(
            header::LAST_MODIFIED,
            hv(&httpdate::fmt_http_date(last_modified)),
        );
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Entity {
            content,
            etag,
            last_modified: Some(last_modified),
            headers,
            ranges: !self.ignore_range.load(Ordering::SeqCst),
            head_ranges: true,
            exact: true,
            throttle: *lock(&self.throttle),
        }
    }
}

/// A running hub mock: its API host, its storage host and their shared request log, plus the
/// hub's own state `S`. Dropping it stops both hosts. The methods every hub has live here;
/// each hub adds its own in its module ([`super::huggingface::HfMock`],
/// [`super::modelscope::MsMock`], [`super::civitai::CivitaiMock`]).
pub struct Mock<S> {
    pub(crate) state: Arc<S>,
    pub(crate) storage: Arc<StorageHost>,
    log: RequestLog,
    api: Host,
}

impl<S: Send + Sync + 'static> Mock<S> {
    /// Starts the storage host with `rules`, builds the hub state from the API's base URL and
    /// the storage host, and serves the API (logged as `api_label`) with `serve`.
    pub(crate) fn launch<F, Fut>(
        api_label: &'static str,
        rules: StorageRules,
        state: impl FnOnce(String, Arc<StorageHost>) -> S,
        serve: F,
    ) -> Mock<S>
    where
        F: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response> + Send + 'static,
    {
        let log = RequestLog::default();
        let storage = Arc::new(StorageHost::start(rules, log.clone()));
        let api = Bound::new();
        let state = Arc::new(state(api.base_url(), storage.clone()));
        let api = api.serve(api_label, log.clone(), handler(state.clone(), serve));
        Mock {
            state,
            storage,
            log,
            api,
        }
    }

    /// `http://127.0.0.1:PORT` of the API host: the client's endpoint (`HF_ENDPOINT`,
    /// `MODELSCOPE_ENDPOINT`, the Civitai base URL).
    pub fn endpoint(&self) -> String {
        self.api.base_url()
    }

    /// Every request received so far by both hosts (see [`RequestRecord::host`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.all()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.log.forget(|_| true);
    }

    /// Expires every storage URL signed so far: they answer `403` from now on, so a client
    /// must resolve again.
    pub fn expire_signed_urls(&self) {
        self.storage.expire_signed_urls();
    }

    /// Lifetime of storage URLs signed from now on (default one hour; the URL carries it).
    pub fn set_signed_url_ttl(&self, ttl: Duration) {
        self.storage.set_signed_url_ttl(ttl);
    }
}
