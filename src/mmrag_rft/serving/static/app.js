// The explanation page: ask, then show the answer, its ranked evidence, the reasoning, every stage-1
// judgement and the timings. Data is only ever inserted as text (never as HTML).
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") {  // through the CSSOM: the page's CSP forbids inline style attributes
      for (const decl of String(v).split(";")) {
        const at = decl.indexOf(":");
        if (at > 0) node.style.setProperty(decl.slice(0, at).trim(), decl.slice(at + 1).trim());
      }
    }
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmtScore(x) {
  return typeof x === "number" && isFinite(x) ? x.toFixed(3) : "–";
}

function fmtSeconds(s) {
  if (typeof s !== "number") return "–";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

function scoreBar(score, threshold) {
  const pct = Math.max(0, Math.min(1, score || 0)) * 100;
  const bar = el("div", { class: "bar", title: `P(yes) = ${fmtScore(score)}` },
    el("div", { class: "fill", style: `width:${pct.toFixed(1)}%` }));
  if (typeof threshold === "number") {
    bar.append(el("div", { class: "thr", style: `left:${(threshold * 100).toFixed(1)}%`,
                           title: `threshold ${threshold}` }));
  }
  return bar;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind}`, text });
}

function describeError(status, body) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => {
      const field = Array.isArray(d.loc) ? d.loc.filter((x) => x !== "body").join(".") : "";
      return field ? `${field}: ${d.msg}` : d.msg;
    }).join("; ");
  }
  if (body && typeof body.detail === "string") return body.detail;
  return `request failed (HTTP ${status})`;
}

let info = null;

async function loadInfo() {
  try {
    const r = await fetch("/v1/info");
    info = await r.json();
    const d = info.defaults || {};
    $("#top_n").placeholder = d.top_n ?? "";
    $("#threshold").placeholder = d.threshold ?? "";
    $("#top_k").placeholder = d.top_k ?? "";
    if (info.limits) $("#question").maxLength = info.limits.max_question_chars;
    $("#service-info").textContent =
      `stage 1 ${info.model} (${d.stage1_mode} mode)` + (info.stage2_model ? ` · stage 2 ${info.stage2_model}` : "")
      + ` · ${info.index_size ?? 0} indexed candidates`;
  } catch (e) {
    $("#service-info").textContent = "service info unavailable";
  }
}

function candidateCard(c, rankPos, j, threshold) {
  const thumb = c && c.image_url
    ? el("img", { src: c.image_url, alt: c.title || c.id, loading: "lazy", class: "thumb" })
    : el("div", { class: "thumb placeholder", text: c ? c.modality : "?" });
  const head = el("div", { class: "card-head" },
    el("span", { class: "rank", text: `#${rankPos}` }),
    el("span", { class: "title", text: (c && c.title) || (c ? c.id : "unknown candidate") }),
  );
  const badges = el("div", { class: "badges" });
  if (c) badges.append(badge(c.modality, "mod"));
  if (j) badges.append(j.kept ? badge("kept", "ok") : badge("dropped by stage 1", "warn"));
  const body = el("p", { class: "text", text: c ? c.text : "" });
  const score = el("div", { class: "score" },
    el("span", { class: "score-label", text: `stage-1 P(yes) ${j ? fmtScore(j.score) : "–"}` }),
    j ? scoreBar(j.score, threshold) : null);
  const id = el("div", { class: "cid" }, el("a", { href: `/v1/candidates/${encodeURIComponent(c ? c.id : "")}`,
                                                   target: "_blank", rel: "noopener", text: c ? c.id : "" }));
  return el("article", { class: "card", "data-id": c ? c.id : "" },
    thumb, el("div", { class: "card-body" }, head, badges, body, score, id));
}

function render(res, threshold) {
  $("#result").classList.remove("hidden");
  $("#answer").textContent = res.answer || "(stage 2 gave no answer text: see its raw output below)";

  const badges = $("#badges");
  badges.replaceChildren();
  if (res.abstained) badges.append(badge("abstained", "warn"));
  if (res.fallback) badges.append(badge("filter order used", "warn"));
  badges.append(res.faithful ? badge("faithful", "ok") : badge("cites unseen evidence", "bad"));

  const notes = [];
  if (res.abstained) notes.push("No candidate passed the stage-1 filter, so the system declined to answer.");
  if (res.fallback) notes.push(res.fallback);
  for (const [stage, why] of Object.entries(res.bypassed || {})) notes.push(`${stage.replace("_", " ")} bypassed: ${why}.`);
  if (!res.faithful && res.unfaithful_ids.length) notes.push(`Ranked ids not shown to stage 2: ${res.unfaithful_ids.join(", ")}`);
  $("#notes").textContent = notes.join("\n");
  const by = res.bypassed || {};
  const byFilter = Boolean(by.stage2_ranking) || Boolean(by.stage2_first_pick) || Boolean(res.fallback);
  $("#evidence-hint").textContent = byFilter
    ? "ranked by the stage-1 filter (stage 2's own ranking is not cited) · the answer rests on these"
    : "ranked by stage 2 · the answer rests on these";

  const byId = new Map(res.judgements.map((j) => [j.id, j]));
  const ev = $("#evidence");
  ev.replaceChildren();
  res.rank.forEach((cid, i) => ev.append(candidateCard(res.candidates[cid], i + 1, byId.get(cid), threshold)));
  if (!res.rank.length) ev.append(el("p", { class: "empty", text: "No evidence was ranked." }));

  $("#reasoning").textContent = res.reasoning || "(stage 2 gave no reasoning)";
  $("#raw").textContent = res.raw_stage2 || "(none: stage 2 did not run)";

  const ranked = new Map(res.rank.map((cid, i) => [cid, i + 1]));
  const tbody = $("#judgements tbody");
  tbody.replaceChildren();
  const rows = [...res.judgements].sort((a, b) => b.score - a.score);
  rows.forEach((j, i) => {
    const c = res.candidates[j.id] || { id: j.id, title: j.id, modality: "?" };
    const thumb = c.image_url ? el("img", { src: c.image_url, alt: "", class: "mini", loading: "lazy" }) : "";
    const decision = j.kept
      ? badge(ranked.has(j.id) ? `kept · rank ${ranked.get(j.id)}` : "kept", "ok")
      : badge(j.relevant ? "over threshold, over top-k" : "dropped", "muted");
    const name = el("td", { class: "cand" }, el("div", { class: "t", text: c.title || c.id }),
      el("div", { class: "s", text: (c.text || "").slice(0, 140) }));
    if (j.reason) name.append(el("div", { class: "why", text: `why: ${j.reason}` }));
    tbody.append(el("tr", { class: j.kept ? "kept" : "dropped" },
      el("td", { text: String(i + 1) }), el("td", {}, thumb), name,
      el("td", { text: c.modality }),
      el("td", { class: "num", text: (j.retrieval_rank == null ? "" : `#${j.retrieval_rank} · `)
        + (j.retrieval_score == null ? "–" : j.retrieval_score.toFixed(4)) }),
      el("td", { class: "p" }, el("span", { class: "num", text: fmtScore(j.score) }), scoreBar(j.score, threshold)),
      el("td", {}, decision)));
  });

  const t = res.timings || {};
  const tm = $("#timings");
  tm.replaceChildren();
  const parts = [["queue", t.queue_s], ["retrieve", t.retrieve_s], ["stage 1", t.stage1_s], ["stage 2", t.stage2_s]];
  const total = t.total_s || parts.reduce((a, [, v]) => a + (v || 0), 0) || 1;
  const strip = el("div", { class: "strip" });
  for (const [name, v] of parts) {
    if (typeof v !== "number") continue;
    strip.append(el("div", { class: `seg ${name.replace(" ", "")}`, style: `flex:${Math.max(v, total * 0.01)}`,
                             title: `${name}: ${fmtSeconds(v)}` }));
    tm.append(el("span", { class: "tlabel" }, el("i", { class: `dot ${name.replace(" ", "")}` }),
      `${name} ${fmtSeconds(v)}`));
  }
  tm.append(el("span", { class: "tlabel total", text: `pipeline total ${fmtSeconds(t.total_s)}` }));
  tm.prepend(strip);
  $("#models").textContent = Object.entries(res.models || {}).map(([k, v]) => `${k}: ${v}`).join(" · ");
}

async function ask(ev) {
  ev.preventDefault();
  const form = $("#ask-form");
  const status = $("#status");
  const button = $("#ask-button");
  const question = $("#question").value.trim();
  if (!question) {
    status.textContent = "Type a question first.";
    status.className = "status error";
    return;
  }
  const fd = new FormData();
  fd.append("question", question);
  for (const name of ["top_n", "threshold", "top_k"]) {
    const v = $(`#${name}`).value.trim();
    if (v !== "") fd.append(name, v);
  }
  const file = $("#image").files[0];
  if (file) fd.append("image", file);
  const threshold = $("#threshold").value.trim() !== "" ? Number($("#threshold").value)
    : (info && info.defaults ? info.defaults.threshold : undefined);

  button.disabled = true;
  form.classList.add("busy");
  status.className = "status";
  status.textContent = "Retrieving, judging every candidate, then ranking and answering…";
  const t0 = performance.now();
  try {
    const r = await fetch("/v1/ask", { method: "POST", body: fd });
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) throw new Error(describeError(r.status, body));
    render(body, threshold);
    status.textContent = `Answered in ${fmtSeconds((performance.now() - t0) / 1000)}.`;
  } catch (e) {
    status.textContent = e.message || String(e);
    status.className = "status error";
  } finally {
    button.disabled = false;
    form.classList.remove("busy");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#ask-form").addEventListener("submit", ask);
  $("#question").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#ask-form").requestSubmit(); }
  });
  loadInfo();
});
