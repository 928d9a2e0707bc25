// The mdl dashboard. Plain JavaScript, no dependencies, nothing fetched from the internet.
// Every piece of state shown here comes from the daemon: a snapshot and then events over
// /api/v1/events; every button sends one request to /api/v1 and the change comes back as an
// event. Text from the daemon is always inserted as text (textContent), never as HTML.
"use strict";

// ---------------------------------------------------------------- translations
const STRINGS = {
  en: {
    tagline: "Model downloads you can trust",
    connecting: "Connecting…", live: "Connected", down: "Service not reachable, retrying…",
    add_title: "Download a model",
    source_placeholder: "Paste a model name or link, e.g. sentence-transformers/all-MiniLM-L6-v2",
    preview: "Preview", download: "Download", options: "Options",
    revision: "Revision (branch, tag or commit)", dest: "Destination folder",
    dest_placeholder: "Default: the hub's cache (models) or the Downloads folder (links)",
    include: "Only files matching (comma-separated)", exclude: "Skip files matching (comma-separated)",
    sha256: "Expected SHA-256 (single file, optional)",
    token: "Access token for this download (optional)",
    token_placeholder: "hf_… for gated or private models",
    detected: "Detected: {kind}", detected_as: "will be downloaded as {source}",
    kind_hf: "Hugging Face model", kind_ms: "ModelScope model", kind_civitai: "Civitai model",
    kind_url: "Direct link", kind_unknown: "Not recognised yet: paste a model name (org/name) or a link",
    file: "File", size: "Size", status: "Status",
    plan_title: "{n} files from {source}", plan_title_one: "1 file from {source}",
    plan_rev: "revision {rev}",
    present: "already here", to_fetch: "to download", partly: "{size} left",
    plan_summary: "{fetch} to download, {present} already present.",
    speed_title: "Download speed", speed_window: "last 5 minutes",
    queue_title: "Downloads", queue_empty: "Nothing is downloading. Paste a model name above to start.",
    history_title: "Finished", history_empty: "No finished downloads yet.", clear_history: "Clear history",
    n_jobs: "{n} active",
    state_queued: "waiting", state_running: "downloading", state_verifying: "verifying",
    state_completed: "done, verified", state_failed: "failed", state_paused: "paused", state_cancelled: "cancelled",
    file_pending: "waiting", file_downloading: "downloading", file_verifying: "verifying",
    file_completed: "verified", file_failed: "failed",
    pause: "Pause", resume: "Resume", cancel: "Cancel", remove: "Remove", up: "▲", down_btn: "▼",
    up_title: "Higher priority", down_title: "Lower priority",
    files: "{n} files", eta: "{t} left", speed: "{s}/s", of: "{a} of {b}",
    saved_to: "Saved to", files_in: "Files:",
    settings_title: "Settings", concurrency: "Downloads at once", bandwidth: "Speed limit (MB/s, empty for none)",
    save: "Save", saved: "Saved",
    tokens_title: "Hub tokens",
    tokens_note: "For gated and private models. Kept by the download service, readable only by you, and sent only to that hub.",
    endpoints_title: "Hub endpoints",
    endpoints_note: "Where models are downloaded from. A mirror such as hf-mirror.com helps where the official site is slow or blocked. Used by every download started afterwards.",
    preset_official: "Official ({url})", preset_hf_mirror: "Mirror hf-mirror.com", preset_custom: "Custom…",
    endpoint_custom: "https://your-mirror.example", endpoint_save: "Use",
    origin_default: "The official site.", origin_config: "From the service's config file.",
    origin_runtime: "Set here; stays until the config file changes it.", origin_reset: "Use the config file's",
    origin_env: "{url} comes first (set in the service's environment).",
    origin_then: "If it fails: {url}.",
    health_title: "Needs your attention",
    health_modified: "{n} downloaded files were changed on disk", health_modified_one: "1 downloaded file was changed on disk",
    health_missing: "{n} downloaded files are missing", health_missing_one: "1 downloaded file is missing",
    health_files_detail: "Verify & repair checks every finished download and downloads again what is damaged or missing.",
    health_verify: "Verify & repair", health_verify_done: "Checked: {n} downloads queued again.",
    health_write: "The service cannot save its list of downloads",
    health_write_detail: "{error} — usually a full disk: free space where the service keeps its data ({dir}). Downloads are paused and continue by themselves.",
    health_lost: "{n} downloads were lost from the service's list", health_lost_one: "1 download was lost from the service's list",
    health_lost_detail: "Its partial files are still on disk. Add it again to continue: {source}",
    health_add_again: "Add again",
    health_damaged: "{n} damaged entries were set aside", health_damaged_one: "1 damaged entry was set aside",
    health_damaged_detail: "The service skipped entries it could not read ({first}). Nothing else is needed; “mdlctl daemon status” lists them.",
    health_moved: "The service's list could not be opened and was put aside",
    health_moved_detail: "{error}. It was moved to {path}; the service started with an empty list.",
    health_config: "The last edit of the config file was not applied",
    health_config_detail: "{error} — fix the file; until then the previous settings stay.",
    health_dropdir: "The drop folder is not being watched",
    health_check: "Check again", health_dismiss: "Dismiss",
    hub_hf: "Hugging Face", hub_ms: "ModelScope", hub_civitai: "Civitai",
    token_set: "✓ set", token_unset: "not set", token_new: "Paste a token", token_save: "Save", token_remove: "Remove",
    daemon_info: "mdld {version} · pid {pid} · data in {dir}",
    footer: "This page talks only to the download service on this computer.",
    confirm_cancel: "Cancel this download and delete its partial files?",
    err_auth: "This model needs permission",
    err_not_found: "Not found", err_no_space: "Not enough disk space",
    err_integrity: "The file did not match its checksum", err_network: "Could not download",
    err_fatal: "The server refused the download", err_rate_limited: "The server is busy",
    err_unreachable: "The download service is not running", err_invalid_request: "That did not work",
    err_unauthenticated: "This page needs a new link", err_forbidden: "Refused", err_other: "Something went wrong",
    err_conflict: "Not possible right now", err_too_large: "Too much text", err_busy: "Too many dashboard tabs",
    err_method_not_allowed: "That did not work",
    hint_auth: "If the model is gated, open its page (link above), sign in and accept the license. Then add an access token of that account under Settings → Hub tokens, and press Resume (or download again).",
    hint_not_found: "Check the model name or link. A private model also needs an access token (Settings → Hub tokens).",
    hint_no_space: "Free up space on the destination disk (the message says how much is needed), or choose another destination folder, then press Resume.",
    hint_integrity: "Check the SHA-256 you entered, or press Resume to download the file again.",
    hint_network: "Check the internet connection, then press Resume.",
    hint_fatal: "Check the link, then try again.",
    hint_rate_limited: "Wait a few minutes, then press Resume.",
    hint_unreachable: "Start it again: run “mdlctl ui”, or start the mdld service.",
    hint_unauthenticated: "Run “mdlctl ui” again and open the link it prints.",
    paused_by_daemon: "Paused by the service",
    unit_s: "s", unit_min: "min", unit_h: "h",
  },
  "zh-CN": {
    tagline: "可靠的模型下载",
    connecting: "正在连接…", live: "已连接", down: "无法连接下载服务，正在重试…",
    add_title: "下载模型",
    source_placeholder: "粘贴模型名称或链接，例如 sentence-transformers/all-MiniLM-L6-v2",
    preview: "预览", download: "下载", options: "选项",
    revision: "版本（分支、标签或提交）", dest: "保存位置",
    dest_placeholder: "默认：模型仓库的缓存目录（模型）或“下载”文件夹（链接）",
    include: "只下载匹配的文件（逗号分隔）", exclude: "跳过匹配的文件（逗号分隔）",
    sha256: "预期的 SHA-256（单个文件，可选）",
    token: "此次下载的访问令牌（可选）",
    token_placeholder: "受限或私有模型需要 hf_… 令牌",
    detected: "识别为：{kind}", detected_as: "将按 {source} 下载",
    kind_hf: "Hugging Face 模型", kind_ms: "ModelScope 魔搭模型", kind_civitai: "Civitai 模型",
    kind_url: "直接链接", kind_unknown: "暂未识别：请粘贴模型名称（组织/名称）或链接",
    file: "文件", size: "大小", status: "状态",
    plan_title: "来自 {source} 的 {n} 个文件", plan_title_one: "来自 {source} 的 1 个文件",
    plan_rev: "版本 {rev}",
    present: "已存在", to_fetch: "待下载", partly: "还需 {size}",
    plan_summary: "需下载 {fetch}，已存在 {present}。",
    speed_title: "下载速度", speed_window: "最近 5 分钟",
    queue_title: "下载队列", queue_empty: "当前没有下载。在上方粘贴模型名称即可开始。",
    history_title: "已完成", history_empty: "还没有完成的下载。", clear_history: "清除记录",
    n_jobs: "{n} 个进行中",
    state_queued: "等待中", state_running: "下载中", state_verifying: "校验中",
    state_completed: "已完成并校验", state_failed: "失败", state_paused: "已暂停", state_cancelled: "已取消",
    file_pending: "等待中", file_downloading: "下载中", file_verifying: "校验中",
    file_completed: "已校验", file_failed: "失败",
    pause: "暂停", resume: "继续", cancel: "取消", remove: "移除", up: "▲", down_btn: "▼",
    up_title: "提高优先级", down_title: "降低优先级",
    files: "{n} 个文件", eta: "剩余 {t}", speed: "{s}/秒", of: "{a} / {b}",
    saved_to: "保存于", files_in: "文件：",
    settings_title: "设置", concurrency: "同时下载数", bandwidth: "限速（MB/秒，留空表示不限）",
    save: "保存", saved: "已保存",
    tokens_title: "模型仓库令牌",
    tokens_note: "用于受限和私有模型。由下载服务保存，仅您本人可读，且只发送给对应的模型仓库。",
    endpoints_title: "模型仓库地址",
    endpoints_note: "模型从这里下载。官方网站较慢或无法访问时，可以使用 hf-mirror.com 等镜像。对之后开始的所有下载生效。",
    preset_official: "官方（{url}）", preset_hf_mirror: "镜像 hf-mirror.com", preset_custom: "自定义…",
    endpoint_custom: "https://你的镜像地址", endpoint_save: "使用",
    origin_default: "官方网站。", origin_config: "来自下载服务的配置文件。",
    origin_runtime: "在此设置；在配置文件修改此项之前一直有效。", origin_reset: "改用配置文件中的设置",
    origin_env: "优先使用 {url}（在下载服务的环境变量中设置）。",
    origin_then: "失败时使用：{url}。",
    health_title: "需要您处理",
    health_modified: "{n} 个已下载的文件在磁盘上被修改", health_modified_one: "1 个已下载的文件在磁盘上被修改",
    health_missing: "{n} 个已下载的文件不见了", health_missing_one: "1 个已下载的文件不见了",
    health_files_detail: "“校验并修复”会检查所有已完成的下载，并重新下载损坏或缺失的文件。",
    health_verify: "校验并修复", health_verify_done: "检查完成：{n} 个下载已重新排队。",
    health_write: "下载服务无法保存下载列表",
    health_write_detail: "{error} —— 通常是磁盘已满：请清理下载服务数据目录所在磁盘的空间（{dir}）。下载已暂停，空间足够后会自动继续。",
    health_lost: "下载服务的列表中丢失了 {n} 个下载", health_lost_one: "下载服务的列表中丢失了 1 个下载",
    health_lost_detail: "已下载的部分文件仍在磁盘上。重新添加即可继续：{source}",
    health_add_again: "重新添加",
    health_damaged: "{n} 条损坏的记录已被隔离", health_damaged_one: "1 条损坏的记录已被隔离",
    health_damaged_detail: "下载服务跳过了无法读取的记录（{first}）。无需其他操作；“mdlctl daemon status”会列出它们。",
    health_moved: "下载服务的列表无法打开，已被移到一旁",
    health_moved_detail: "{error}。它已被移到 {path}；下载服务以空列表启动。",
    health_config: "配置文件的最近一次修改未生效",
    health_config_detail: "{error} —— 请修正配置文件；在此之前沿用之前的设置。",
    health_dropdir: "未在监视投放文件夹",
    health_check: "重新检查", health_dismiss: "知道了",
    hub_hf: "Hugging Face", hub_ms: "ModelScope 魔搭", hub_civitai: "Civitai",
    token_set: "✓ 已设置", token_unset: "未设置", token_new: "粘贴令牌", token_save: "保存", token_remove: "移除",
    daemon_info: "mdld {version} · 进程 {pid} · 数据目录 {dir}",
    footer: "此页面只与本机上的下载服务通信。",
    confirm_cancel: "取消此下载并删除已下载的部分文件？",
    err_auth: "此模型需要授权",
    err_not_found: "未找到", err_no_space: "磁盘空间不足",
    err_integrity: "文件与校验值不符", err_network: "下载失败",
    err_fatal: "服务器拒绝了下载", err_rate_limited: "服务器繁忙",
    err_unreachable: "下载服务未运行", err_invalid_request: "无法处理此请求",
    err_unauthenticated: "需要新的页面链接", err_forbidden: "请求被拒绝", err_other: "出现错误",
    err_conflict: "当前无法执行", err_too_large: "内容过长", err_busy: "打开的仪表盘页面过多",
    err_method_not_allowed: "无法处理此请求",
    hint_auth: "如果是受限模型，请打开其页面（见上方链接），登录并同意许可协议；然后在“设置 → 模型仓库令牌”中添加该账号的令牌，再点击“继续”（或重新下载）。",
    hint_not_found: "请检查模型名称或链接。私有模型还需要访问令牌（设置 → 模型仓库令牌）。",
    hint_no_space: "请清理目标磁盘空间（上方信息说明了所需空间），或选择其他保存位置，然后点击“继续”。",
    hint_integrity: "请检查填写的 SHA-256，或点击“继续”重新下载该文件。",
    hint_network: "请检查网络连接，然后点击“继续”。",
    hint_fatal: "请检查链接后重试。",
    hint_rate_limited: "请等几分钟后点击“继续”。",
    hint_unreachable: "请重新启动：运行“mdlctl ui”，或启动 mdld 服务。",
    hint_unauthenticated: "请重新运行“mdlctl ui”并打开它显示的链接。",
    paused_by_daemon: "已被下载服务暂停",
    unit_s: "秒", unit_min: "分", unit_h: "小时",
  },
};

function pickLanguage() {
  const saved = localStorage.getItem("mdl.lang");
  if (saved && STRINGS[saved]) return saved;
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const l of langs) {
    const lower = String(l).toLowerCase();
    if (lower.startsWith("zh")) return "zh-CN";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

let lang = pickLanguage();

function t(key, vars) {
  let text = (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.en[key] || key;
  if (vars) for (const [k, v] of Object.entries(vars)) text = text.split("{" + k + "}").join(String(v));
  return text;
}

function applyLanguage() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const b of document.querySelectorAll(".lang button")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  setConn(connState);
  showDaemonInfo();
  renderTokens();
  renderEndpoints();
  renderHealth();
  detect();
  render();
  if (lastPlan) showPlan(lastPlan);
}

// ---------------------------------------------------------------- formatting
function fmtBytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return (i === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : 1)) + " " + units[i];
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "?";
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " " + t("unit_s");
  if (s < 3600) return Math.floor(s / 60) + " " + t("unit_min") + " " + (s % 60) + " " + t("unit_s");
  return Math.floor(s / 3600) + " " + t("unit_h") + " " + Math.floor((s % 3600) / 60) + " " + t("unit_min");
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// Text with its http(s) links made clickable (as text nodes and <a> elements, never HTML).
function linkify(text) {
  const frag = document.createDocumentFragment();
  const re = /https?:\/\/[^\s)"'<>,]+/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    frag.append(text.slice(last, m.index));
    let href = m[0].replace(/[.;:]+$/, "");
    frag.append(el("a", { href, target: "_blank", rel: "noopener noreferrer", text: href }));
    last = m.index + href.length;
  }
  frag.append(text.slice(last));
  return frag;
}

// An error as a person reads it: a title for its kind, the daemon's message, what to do.
function errorNode(kind, message, serverHint, cls) {
  const box = el("div", { class: cls });
  box.append(el("div", { class: "title", text: t("err_" + kind) }));
  box.append(el("div", { class: "message" }, linkify(message || "")));
  const key = "hint_" + kind;
  const hint = STRINGS.en[key] ? t(key) : serverHint;
  if (hint) box.append(el("div", { class: "hint" }, linkify(hint)));
  return box;
}

function showError(container, err) {
  container.replaceChildren(...errorNode(err.kind, err.message, err.hint, "").childNodes);
  container.hidden = false;
}

// ---------------------------------------------------------------- API
async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch("/api/v1" + path, opts);
  } catch (e) {
    throw { kind: "unreachable", message: String(e) };
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ kind: "other", message: response.statusText }));
  if (!response.ok) throw data;
  return data;
}

// ---------------------------------------------------------------- the add box
const $ = (id) => document.getElementById(id);

// What a pasted text is, and the source string sent to the daemon. The daemon itself parses
// hub page URLs (huggingface.co/..., modelscope.cn/models/..., civitai.com/models/...);
// only a bare "org/name" is turned into hf://org/name here, as people paste it from a page.
function classify(raw) {
  const text = raw.trim();
  if (!text) return null;
  const lower = text.toLowerCase();
  if (/^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(text)) return { kind: "hf", source: "hf://" + text };
  if (lower.startsWith("hf://")) return { kind: "hf", source: text };
  if (lower.startsWith("ms://")) return { kind: "ms", source: text };
  if (lower.startsWith("civitai://") || lower.startsWith("urn:air:")) return { kind: "civitai", source: text };
  let url;
  try { url = new URL(text); } catch (e) { return { kind: "unknown", source: text }; }
  if (url.protocol !== "http:" && url.protocol !== "https:") return { kind: "unknown", source: text };
  const host = url.hostname.toLowerCase();
  if (host === "huggingface.co" || host.endsWith(".huggingface.co") || host === "hf.co" || host === "hf-mirror.com") return { kind: "hf", source: text };
  if (host.endsWith("modelscope.cn")) return { kind: "ms", source: text };
  if (host.endsWith("civitai.com")) return { kind: "civitai", source: text };
  return { kind: "url", source: text };
}

function detect() {
  const box = $("detected");
  const found = classify($("source").value);
  if (!found) { box.hidden = true; return; }
  box.replaceChildren(el("span", { text: t("detected", { kind: "" }) }), el("b", { text: t("kind_" + found.kind) }));
  if (found.source !== $("source").value.trim()) box.append(" — " + t("detected_as", { source: found.source }));
  box.hidden = false;
}

function patterns(id) {
  return $(id).value.split(",").map((s) => s.trim()).filter(Boolean);
}

function addBody() {
  const found = classify($("source").value);
  return {
    source: found ? found.source : "",
    revision: $("revision").value,
    dest: $("dest").value,
    include: patterns("include"),
    exclude: patterns("exclude"),
    sha256: $("sha256").value,
    token: $("token").value,
  };
}

let lastPlan = null;

function showPlan(plan) {
  lastPlan = plan;
  const n = plan.files.length;
  let title = n === 1 ? t("plan_title_one", { source: plan.source }) : t("plan_title", { n, source: plan.source });
  if (plan.revision) title += " · " + t("plan_rev", { rev: plan.revision.slice(0, 12) });
  $("plan-title").textContent = title;
  let fetchBytes = 0, presentBytes = 0;
  const rows = plan.files.map((f) => {
    const size = f.size;
    const left = f.bytes_to_fetch;
    let status, cls = "";
    if (left === 0) { status = t("present"); cls = "present"; presentBytes += size || 0; }
    else if (left !== null && size !== null && left < size) { status = t("partly", { size: fmtBytes(left) }); fetchBytes += left; presentBytes += size - left; }
    else { status = t("to_fetch"); fetchBytes += left || size || 0; }
    return el("tr", {}, el("td", { text: f.path }), el("td", { class: "num", text: fmtBytes(size) }), el("td", { class: cls, text: status }));
  });
  $("plan-files").replaceChildren(...rows);
  $("plan-summary").textContent = t("plan_summary", { fetch: fmtBytes(fetchBytes), present: fmtBytes(presentBytes) });
  $("plan").hidden = false;
}

async function preview() {
  $("add-error").hidden = true;
  const body = addBody();
  if (!body.source) return;
  $("preview-btn").disabled = true;
  try {
    showPlan(await api("POST", "/plan", body));
  } catch (err) {
    $("plan").hidden = true; lastPlan = null;
    showError($("add-error"), err);
  } finally {
    $("preview-btn").disabled = false;
  }
}

async function download(event) {
  event.preventDefault();
  $("add-error").hidden = true;
  const body = addBody();
  if (!body.source) return;
  $("download-btn").disabled = true;
  try {
    const reply = await api("POST", "/jobs", body);
    // Events are the truth: an event about the job may already have overtaken this reply.
    for (const job of reply.jobs) if (!jobs.has(job.id)) jobs.set(job.id, job);
    $("source").value = ""; $("token").value = ""; $("sha256").value = "";
    $("plan").hidden = true; lastPlan = null;
    detect();
    render();
  } catch (err) {
    showError($("add-error"), err);
  } finally {
    $("download-btn").disabled = false;
  }
}

// ---------------------------------------------------------------- jobs, live
const jobs = new Map();          // id -> JobInfo, from the snapshot and events
const live = new Map();          // id -> {speed, eta, at}, from progress events
const samples = [];              // [time ms, total bytes/s], the speed graph
const GRAPH_MS = 5 * 60 * 1000;

// The change itself comes back as an event (the reply may be older than an event already
// received, e.g. "running" just before "paused"), so only errors are shown from the reply.
function jobAction(job, path, body) {
  return api("POST", "/jobs/" + job.id + path, body).catch((err) => alertError(job.id, err));
}

const actionErrors = new Map();
function alertError(id, err) { actionErrors.set(id, err); render(); }

function fileName(job) {
  const src = job.source.replace(/^(hf|ms|civitai):\/\//, "");
  return src.length > 90 ? src.slice(0, 87) + "…" : src;
}

// A job's card is built once per "shape" (state, files, error, language) and then updated in
// place as progress arrives, so a button under the mouse is never replaced mid-click.
function jobShape(job) {
  const e = job.error ? job.error.kind + job.error.message : "";
  const a = actionErrors.get(job.id);
  return [lang, job.state, job.priority, job.files.map((f) => f.path + f.state).join("|"), e, a ? a.message : ""].join("\n");
}

function jobNode(job) {
  const node = el("div", { class: "job", "data-job": String(job.id), "data-state": job.state });
  const actions = el("div", { class: "actions" });
  const button = (label, cls, fn, title) => actions.append(el("button", { type: "button", class: cls, text: t(label), title: title ? t(title) : t(label), onclick: fn }));
  if (!["completed", "failed", "cancelled"].includes(job.state)) {
    button("up", "up", () => jobAction(job, "/priority", { priority: job.priority + 1 }), "up_title");
    button("down_btn", "down", () => jobAction(job, "/priority", { priority: job.priority - 1 }), "down_title");
  }
  if (["queued", "running", "verifying"].includes(job.state)) button("pause", "pause", () => jobAction(job, "/pause"));
  if (job.state === "paused" || job.state === "failed") button("resume", "resume", () => jobAction(job, "/resume"));
  if (!["completed", "cancelled"].includes(job.state)) button("cancel", "cancel", () => { if (confirm(t("confirm_cancel"))) jobAction(job, "/cancel"); });
  if (["completed", "failed", "cancelled"].includes(job.state)) button("remove", "remove", () => api("DELETE", "/jobs/" + job.id).catch((err) => alertError(job.id, err)));
  node.append(el("div", { class: "job-head" },
    el("div", {}, el("span", { class: "job-source", text: fileName(job) }), el("span", { class: "badge " + job.state, text: t("state_" + job.state) })),
    actions));
  if (job.state !== "completed") node.append(el("div", { class: "bar job-bar " + job.state }, el("div")));
  node.append(el("div", { class: "stats" }, el("span", { class: "bytes" }), el("span", { class: "rate" }), el("span", { class: "eta" }),
    job.files.length > 1 ? el("span", { text: t("files", { n: job.files.length }) }) : null,
    job.revision ? el("span", { text: job.revision.slice(0, 12) }) : null));
  if (job.error) {
    const cls = job.state === "paused" ? "job-error paused-note" : "job-error";
    node.append(errorNode(job.error.kind, job.error.message, null, cls));
  }
  const actionErr = actionErrors.get(job.id);
  if (actionErr) node.append(errorNode(actionErr.kind, actionErr.message, actionErr.hint, "job-error"));
  if (job.state === "completed" && job.files.length !== 1) node.append(el("div", { class: "paths" }, t("saved_to") + " ", el("code", { text: job.dest })));
  if (job.files.length === 1 && job.state === "completed") {
    node.append(el("div", { class: "paths" }, t("saved_to") + " ", el("code", { text: job.files[0].path })));
  } else if (job.files.length > 1) {
    const list = el("div", { class: "file-list" });
    for (const f of job.files) {
      const bar = el("div", { class: "bar small " + (f.state === "completed" ? "completed" : job.state) }, el("div"));
      list.append(el("div", { class: "file", "data-state": f.state },
        el("div", { class: "path", text: f.path }, bar),
        el("div", { class: "nums" }),
        el("div", { class: "nums fstate", text: t("file_" + f.state) })));
    }
    const details = el("details", { class: "files" }, el("summary", { text: t("files", { n: job.files.length }) }), list);
    details.open = job.files.length <= 3 || openFiles.has(job.id);
    details.addEventListener("toggle", () => { if (details.open) openFiles.add(job.id); else openFiles.delete(job.id); });
    node.append(details);
  }
  return node;
}
const openFiles = new Set();

// The numbers of a job's card: bars, bytes, speed, ETA.
function fillJob(node, job) {
  const info = live.get(job.id);
  const total = job.bytes_total;
  const pct = job.state === "completed" ? 100 : total ? Math.min(100, (100 * job.bytes_done) / total) : 0;
  const bar = node.querySelector(".job-bar > div");
  if (bar) bar.style.width = pct.toFixed(1) + "%";
  node.querySelector(".bytes").textContent = total
    ? t("of", { a: fmtBytes(job.bytes_done), b: fmtBytes(total) }) + " (" + pct.toFixed(0) + "%)"
    : fmtBytes(job.bytes_done);
  const running = job.state === "running" && info;
  node.querySelector(".rate").textContent = running ? t("speed", { s: fmtBytes(info.speed) }) : "";
  node.querySelector(".eta").textContent = running && info.eta !== null && info.eta !== undefined ? t("eta", { t: fmtDuration(info.eta) }) : "";
  const rows = node.querySelectorAll(".file");
  job.files.forEach((f, i) => {
    const row = rows[i];
    if (!row) return;
    const fp = f.state === "completed" ? 100 : f.size ? Math.min(100, (100 * f.bytes_done) / f.size) : 0;
    row.querySelector(".bar > div").style.width = fp.toFixed(1) + "%";
    row.querySelector(".nums").textContent = f.size ? t("of", { a: fmtBytes(f.bytes_done), b: fmtBytes(f.size) }) : fmtBytes(f.bytes_done);
  });
}

const cards = new Map(); // id -> {shape, node}

function cardFor(job) {
  const shape = jobShape(job);
  let card = cards.get(job.id);
  if (!card || card.shape !== shape) {
    card = { shape, node: jobNode(job) };
    cards.set(job.id, card);
  }
  fillJob(card.node, job);
  return card.node;
}

// Put `nodes` in `container` in order, touching the DOM only where it differs.
function place(container, nodes) {
  const current = [...container.children];
  if (current.length === nodes.length && current.every((n, i) => n === nodes[i])) return;
  container.replaceChildren(...nodes);
}

function render() {
  const all = [...jobs.values()];
  for (const id of cards.keys()) if (!jobs.has(id)) cards.delete(id);
  const active = all.filter((j) => !["completed", "failed", "cancelled"].includes(j.state));
  const done = all.filter((j) => ["completed", "failed", "cancelled"].includes(j.state))
    .sort((a, b) => (b.finished_ms || 0) - (a.finished_ms || 0));
  // Queue in run order: running first, then by priority, then oldest first.
  const rank = { running: 0, verifying: 0, queued: 1, paused: 2 };
  active.sort((a, b) => (rank[a.state] - rank[b.state]) || (b.priority - a.priority) || (a.created_ms - b.created_ms));
  place($("queue"), active.map(cardFor));
  place($("history"), done.map(cardFor));
  $("queue-empty").hidden = active.length > 0;
  $("history-empty").hidden = done.length > 0;
  $("clear-history").hidden = done.length === 0;
  $("queue-count").textContent = active.length ? t("n_jobs", { n: active.length }) : "";
  const speed = currentSpeed();
  $("total-speed").textContent = speed > 0 ? t("speed", { s: fmtBytes(speed) }) : "";
}

function currentSpeed() {
  const now = Date.now();
  let sum = 0;
  for (const [id, info] of live) {
    const job = jobs.get(id);
    if (job && job.state === "running" && now - info.at < 3000) sum += info.speed;
  }
  return sum;
}

function onEvent(name, data) {
  switch (name) {
    case "snapshot":
      jobs.clear();
      for (const job of data) jobs.set(job.id, job);
      break;
    case "progress": {
      const job = jobs.get(data.job);
      if (job) {
        job.bytes_done = data.job_bytes_done;
        if (data.job_bytes_total !== null) job.bytes_total = data.job_bytes_total;
        const f = job.files.find((x) => x.path === data.file);
        if (f) { f.bytes_done = data.file_bytes_done; if (f.state === "pending") f.state = "downloading"; }
      }
      live.set(data.job, { speed: data.bytes_per_second, eta: data.eta_seconds, at: Date.now() });
      break;
    }
    case "verifying": {
      const job = jobs.get(data.job);
      const f = job && job.files.find((x) => x.path === data.file);
      if (f) f.state = "verifying";
      break;
    }
    case "removed":
      jobs.delete(data); live.delete(data); actionErrors.delete(data);
      break;
    case "queued": case "started": case "completed": case "failed": case "paused":
    case "resumed": case "cancelled": case "updated":
      jobs.set(data.id, data);
      if (name !== "updated") actionErrors.delete(data.id);
      if (name !== "started" && name !== "updated") live.delete(data.id);
      break;
    default:
      return; // heartbeat, lagged and resync (a snapshot follows), end, file_changed
  }
  // A lost download added again leaves the health banner.
  if ((name === "snapshot" || name === "queued") && health && health.store.lost.length) renderHealth();
  scheduleRender();
}

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; render(); });
}

let connState = "connecting";
function setConn(state) {
  connState = state;
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = t(state === "live" ? "live" : state === "down" ? "down" : "connecting");
}

function connect() {
  const source = new EventSource("/api/v1/events");
  const names = ["snapshot", "queued", "started", "progress", "verifying", "completed", "failed", "paused",
    "resumed", "cancelled", "removed", "updated", "heartbeat", "lagged", "end", "error", "file_changed", "resync"];
  for (const name of names) {
    source.addEventListener(name, (e) => {
      if (!e.data) return; // the browser's own connection-error event
      setConn("live");
      let data = null;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      if (name === "error") { setConn("down"); return; }
      // The health counts change with a mark, and when a download finishes, is queued again
      // (a repair) or is removed.
      if (["file_changed", "completed", "queued", "removed"].includes(name)) scheduleHealth();
      onEvent(name, data);
    });
  }
  source.onopen = () => setConn("live");
  source.onerror = () => {
    if (source.readyState === EventSource.OPEN) return;
    setConn("down");
    // The browser retries a dropped stream by itself, but gives up on an error reply (the
    // service is not running): then try again every few seconds, until it is back.
    if (source.readyState === EventSource.CLOSED) setTimeout(() => { connect(); loadSettings(); loadHealth(); }, 3000);
  };
}

// ---------------------------------------------------------------- speed graph
function sampleSpeed() {
  const now = Date.now();
  samples.push([now, currentSpeed()]);
  while (samples.length && now - samples[0][0] > GRAPH_MS) samples.shift();
  drawGraph();
  $("total-speed").textContent = currentSpeed() > 0 ? t("speed", { s: fmtBytes(currentSpeed()) }) : "";
}

function drawGraph() {
  const canvas = $("speed-graph");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...samples.map((s) => s[1]));
  const now = Date.now();
  // The last 5 minutes; while the page is younger than that, the time it has been open
  // (at least 10 s), so a fresh page shows a graph and not a sliver at the right edge.
  const span = Math.min(GRAPH_MS, Math.max(10000, samples.length ? now - samples[0][0] : 0));
  const x = (time) => w - ((now - time) / span) * w;
  const y = (v) => h - 18 - (v / max) * (h - 30);
  ctx.strokeStyle = "#e5e7eb"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(w, y(0)); ctx.stroke();
  ctx.fillStyle = "#6b7280"; ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(t("speed", { s: fmtBytes(max) }), 4, 12);
  if (samples.length < 2) return;
  ctx.beginPath();
  ctx.moveTo(x(samples[0][0]), y(0));
  for (const [time, v] of samples) ctx.lineTo(x(time), y(v));
  ctx.lineTo(x(samples[samples.length - 1][0]), y(0));
  ctx.closePath();
  ctx.fillStyle = "rgba(37, 99, 235, 0.15)"; ctx.fill();
  ctx.beginPath();
  samples.forEach(([time, v], i) => (i ? ctx.lineTo(x(time), y(v)) : ctx.moveTo(x(time), y(v))));
  ctx.strokeStyle = "#2563eb"; ctx.lineWidth = 2; ctx.stroke();
}

// ---------------------------------------------------------------- settings
let daemonInfo = null;
function showDaemonInfo() {
  const d = daemonInfo;
  $("daemon-info").textContent = d ? t("daemon_info", { version: d.version, pid: d.pid, dir: d.data_dir }) : "";
}

async function loadSettings() {
  try {
    const s = await api("GET", "/settings");
    $("settings-error").hidden = true;
    $("max-concurrent").value = s.max_concurrent;
    $("bandwidth").value = s.bandwidth_limit ? (s.bandwidth_limit / 1e6).toString() : "";
    hubEndpoints = s.endpoints || [];
    renderEndpoints();
    daemonInfo = await api("GET", "/status");
    showDaemonInfo();
  } catch (err) {
    showError($("settings-error"), err);
  }
}

async function saveSettings(event) {
  event.preventDefault();
  $("settings-error").hidden = true;
  const bw = $("bandwidth").value.trim();
  try {
    await api("PATCH", "/settings", {
      max_concurrent: Number($("max-concurrent").value),
      bandwidth_limit: bw === "" || Number(bw) === 0 ? null : Math.round(Number(bw) * 1e6),
    });
    $("settings-saved").hidden = false;
    setTimeout(() => { $("settings-saved").hidden = true; }, 2000);
  } catch (err) {
    showError($("settings-error"), err);
  }
}

// ---------------------------------------------------------------- hub tokens
let hubTokens = [];

function renderTokens() {
  const rows = hubTokens.map((h) => {
    const input = el("input", { type: "password", autocomplete: "off", placeholder: t("token_new"), "data-hub": h.hub });
    const save = el("button", { type: "button", class: "token-save", text: t("token_save"), onclick: () => {
      if (input.value.trim()) tokenChange("PUT", h.hub, { token: input.value.trim() });
    } });
    const remove = el("button", { type: "button", class: "token-remove", text: t("token_remove"), onclick: () => tokenChange("DELETE", h.hub) });
    remove.hidden = !h.set;
    return el("div", { class: "token-row", "data-hub": h.hub },
      el("span", { text: t("hub_" + h.hub) }),
      el("span", { class: "state" + (h.set ? " set" : ""), text: t(h.set ? "token_set" : "token_unset") }),
      input, save, remove);
  });
  $("tokens").replaceChildren(...rows);
}

async function loadTokens() {
  try { hubTokens = await api("GET", "/tokens"); $("tokens-error").hidden = true; renderTokens(); }
  catch (err) { showError($("tokens-error"), err); }
}

async function tokenChange(method, hub, body) {
  $("tokens-error").hidden = true;
  try { hubTokens = await api(method, "/tokens/" + hub, body); renderTokens(); }
  catch (err) { showError($("tokens-error"), err); }
}

// ---------------------------------------------------------------- hub endpoints
let hubEndpoints = [];
const PRESETS = { hf: [["hf_mirror", "https://hf-mirror.com"]], ms: [], civitai: [] };

function presetOf(h) {
  if (h.endpoints.length === 1 && h.endpoints[0] === h.official) return "official";
  for (const [name, url] of PRESETS[h.hub] || []) if (h.endpoints.length === 1 && h.endpoints[0] === url) return name;
  return "custom";
}

function renderEndpoints() {
  const rows = hubEndpoints.map((h) => {
    const select = el("select", { "data-hub": h.hub, "aria-label": t("hub_" + h.hub) });
    select.append(el("option", { value: "official", text: t("preset_official", { url: h.official.replace(/^https:\/\/(www\.)?/, "") }) }));
    for (const [name] of PRESETS[h.hub] || []) select.append(el("option", { value: name, text: t("preset_" + name) }));
    select.append(el("option", { value: "custom", text: t("preset_custom") }));
    const chosen = presetOf(h);
    select.value = chosen;
    const input = el("input", { type: "text", class: "custom", spellcheck: "false", placeholder: t("endpoint_custom") });
    input.value = chosen === "custom" ? h.endpoints.join(", ") : "";
    input.hidden = chosen !== "custom";
    const save = el("button", { type: "button", class: "endpoint-save", text: t("endpoint_save"), onclick: () => {
      let list;
      if (select.value === "official") list = [h.official];
      else if (select.value === "custom") list = input.value.split(/[\s,]+/).map((u) => u.trim()).filter(Boolean);
      else list = [(PRESETS[h.hub].find((p) => p[0] === select.value) || [])[1]];
      if (list.length) endpointChange("PUT", h.hub, { endpoints: list });
    } });
    select.addEventListener("change", () => { input.hidden = select.value !== "custom"; if (!input.hidden) input.focus(); });
    const origin = el("div", { class: "origin" });
    if (h.environment) origin.append(t("origin_env", { url: h.environment }) + " ");
    origin.append(t("origin_" + h.origin) + " ");
    if (!h.endpoints.includes(h.official)) origin.append(t("origin_then", { url: h.official }) + " ");
    if (h.origin === "runtime") origin.append(el("button", { type: "button", class: "endpoint-reset", text: t("origin_reset"), onclick: () => endpointChange("DELETE", h.hub) }));
    return el("div", { class: "endpoint-row", "data-hub": h.hub, "data-origin": h.origin },
      el("span", { text: t("hub_" + h.hub) }), select, input, save, origin);
  });
  $("endpoints").replaceChildren(...rows);
}

async function endpointChange(method, hub, body) {
  $("endpoints-error").hidden = true;
  try { hubEndpoints = await api(method, "/endpoints/" + hub, body); renderEndpoints(); }
  catch (err) { showError($("endpoints-error"), err); }
}

// ---------------------------------------------------------------- health
let health = null;
let healthNote = "";
const dismissed = new Set(); // informational items a person has read (for this page only)

function plural(key, n) { return n === 1 ? t(key + "_one") : t(key, { n }); }

// What is wrong, as items a person can act on: [id, title, detail, action label, action].
function healthItems(h) {
  const items = [];
  const s = h.store, w = h.watch;
  if (s.write_error) items.push(["write", t("health_write"), t("health_write_detail", { error: s.write_error, dir: daemonInfo ? daemonInfo.data_dir : "" }), "health_check", loadHealth]);
  if (s.moved_aside) items.push(["moved", t("health_moved"), t("health_moved_detail", { error: s.open_error || "", path: s.moved_aside }), null, null]);
  const known = (lost) => [...jobs.values()].some((j) => j.source === lost.source && j.dest === lost.dest);
  for (const lost of s.lost.filter((l) => !known(l))) {
    items.push(["lost", plural("health_lost", 1), t("health_lost_detail", { source: lost.source }), "health_add_again",
      () => api("POST", "/jobs", { source: lost.source, dest: lost.dest }).then(loadHealth).catch((err) => showError($("health-error"), err))]);
  }
  if (s.damaged.length) items.push(["damaged", plural("health_damaged", s.damaged.length), t("health_damaged_detail", { first: s.damaged[0].key }), null, null]);
  const repair = async () => {
    $("health-error").hidden = true;
    try {
      const queued = await api("POST", "/verify", {});
      healthNote = t("health_verify_done", { n: queued.length });
      setTimeout(() => { healthNote = ""; renderHealth(); }, 15000);
      await loadHealth();
    }
    catch (err) { showError($("health-error"), err); }
  };
  if (w.files_modified) items.push(["modified", plural("health_modified", w.files_modified), t("health_files_detail"), "health_verify", repair]);
  if (w.files_missing) items.push(["missing", plural("health_missing", w.files_missing), t("health_files_detail"), w.files_modified ? null : "health_verify", repair]);
  if (w.config_error) items.push(["config", t("health_config"), t("health_config_detail", { error: w.config_error }), null, null]);
  if (w.watch_dir_error) items.push(["dropdir", t("health_dropdir"), w.watch_dir_error, null, null]);
  return items;
}

function renderHealth() {
  const items = health ? healthItems(health) : [];
  const nodes = items.filter(([id, title, detail]) => !dismissed.has(id + title + detail)).map(([id, title, detail, label, action]) => {
    const node = el("div", { class: "health-item" + (["write", "moved", "lost"].includes(id) ? " bad" : ""), "data-health": id },
      el("div", {}, el("div", { class: "what", text: title }), el("div", { class: "detail" }, linkify(detail))));
    if (label) node.append(el("button", { type: "button", class: "secondary", text: t(label), onclick: action }));
    else node.append(el("button", { type: "button", class: "link", text: t("health_dismiss"), onclick: () => { dismissed.add(id + title + detail); renderHealth(); } }));
    return node;
  });
  if (healthNote) nodes.push(el("div", { class: "health-done", text: healthNote }));
  $("health-items").replaceChildren(...nodes);
  $("health").hidden = nodes.length === 0;
}

async function loadHealth() {
  try { health = await api("GET", "/health"); renderHealth(); }
  catch (err) { /* the connection state already says when the service is down */ }
}

let healthTimer = null;
function scheduleHealth() {
  if (healthTimer) return;
  healthTimer = setTimeout(() => { healthTimer = null; loadHealth(); }, 500);
}

// ---------------------------------------------------------------- start
document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll(".lang button")) {
    b.addEventListener("click", () => { lang = b.dataset.lang; localStorage.setItem("mdl.lang", lang); applyLanguage(); });
  }
  $("source").addEventListener("input", () => { detect(); $("plan").hidden = true; lastPlan = null; $("add-error").hidden = true; });
  $("preview-btn").addEventListener("click", preview);
  $("add-form").addEventListener("submit", download);
  $("settings-form").addEventListener("submit", saveSettings);
  $("clear-history").addEventListener("click", () => api("DELETE", "/jobs").catch((err) => showError($("add-error"), err)));
  applyLanguage();
  connect();
  loadSettings();
  loadTokens();
  loadHealth();
  setInterval(sampleSpeed, 500);
  setInterval(loadHealth, 30000);
});
