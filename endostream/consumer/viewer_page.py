"""The viewer's one HTML page: video fitted to the window, a status bar polled from
``/status.json``, and a DISCONNECTED cover when the consumer stops answering (a stalled feed
never looks live). ``{query}`` is the token query string or empty."""

INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>endostream viewer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html,body{{margin:0;height:100%;background:#000;color:#ddd;font:15px system-ui,sans-serif}}
body{{display:flex;flex-direction:column}}
#bar{{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center;padding:6px 12px;background:#181818;
  border-bottom:1px solid #333}}
#state{{font-weight:700;padding:2px 10px;border-radius:4px;min-width:9em;text-align:center}}
.live{{background:#1b7a2e;color:#fff}} .waiting{{background:#a86b00;color:#fff}}
.no_signal,.disconnected{{background:#c01818;color:#fff}} .ended{{background:#555;color:#fff}}
.k{{color:#888}} #ruo{{margin-left:auto;color:#f5b400;font-weight:600}}
#view{{position:relative;flex:1;min-height:0;display:flex;align-items:center;justify-content:center}}
#video{{width:100%;height:100%;object-fit:contain;display:block}}
#video.stale{{filter:grayscale(1) brightness(.3)}}
#cover{{position:absolute;inset:0;display:none;align-items:center;justify-content:center;
  flex-direction:column;text-align:center;color:#ff4040;font-size:min(7vw,64px);font-weight:700}}
#cover small{{color:#ddd;font-size:min(3vw,22px);font-weight:400;margin-top:.5em}}
</style></head>
<body>
<div id="bar">
 <span id="state" class="waiting">CONNECTING</span>
 <span><span class="k">fps</span> <b id="fps">-</b></span>
 <span><span class="k">display lag</span> <b id="lag">-</b></span>
 <span><span class="k">AI mask age</span> <b id="mask">-</b></span>
 <span><span class="k">last frame</span> <b id="age">-</b></span>
 <span><span class="k">model</span> <b id="model">-</b></span>
 <span><span class="k">frames</span> <b id="shown">-</b></span>
 <span id="ruo">RESEARCH USE ONLY - not for diagnosis</span>
</div>
<div id="view"><img id="video" alt="" src="/stream.mjpg{query}">
<div id="cover"><span id="cover-title">DISCONNECTED</span><small id="cover-text"></small></div></div>
<script>
const Q = "{query}", LABEL = {{waiting:"WAITING FOR VIDEO", live:"LIVE", no_signal:"NO SIGNAL",
  ended:"STREAM ENDED", disconnected:"DISCONNECTED"}};
const $ = id => document.getElementById(id);
let fails = 0, last = null, lastOk = null, imgBroken = false;
const ms = v => v == null ? "-" : Math.round(v) + " ms";
function setState(s) {{ $("state").textContent = LABEL[s] || s; $("state").className = s;
  document.body.dataset.state = s; }}
function show(s) {{
  last = s; lastOk = new Date(); fails = 0;
  setState(s.state);
  $("fps").textContent = s.fps == null ? "-" : s.fps.toFixed(1);
  $("lag").textContent = ms(s.latency_ms); $("mask").textContent = ms(s.mask_age_ms);
  $("age").textContent = s.last_frame_age_ms == null ? "-" :
    (s.last_frame_age_ms < 1000 ? ms(s.last_frame_age_ms) : (s.last_frame_age_ms / 1000).toFixed(1) + " s ago");
  $("model").textContent = [s.model, s.backend].filter(Boolean).join(" / ") || "-";
  $("shown").textContent = s.frames_shown;
  $("cover").style.display = "none"; $("video").classList.remove("stale");
  if (imgBroken) {{ imgBroken = false; $("video").src = "/stream.mjpg" + Q + (Q ? "&" : "?") + "t=" + Date.now(); }}
}}
function lost() {{
  const ended = last && last.state === "ended";
  setState(ended ? "ended" : "disconnected");
  $("cover-title").textContent = ended ? "STREAM ENDED" : "DISCONNECTED";
  $("cover-text").textContent = "no updates from the consumer" +
    (lastOk ? " since " + lastOk.toLocaleTimeString() : "") + " - the image is not live";
  $("cover").style.display = "flex"; $("video").classList.add("stale");
  for (const id of ["fps", "lag", "mask", "age"]) $(id).textContent = "-";  // nothing is current
}}
async function poll() {{
  const ctl = new AbortController(), timer = setTimeout(() => ctl.abort(), 1500);
  try {{
    const r = await fetch("/status.json" + Q, {{cache: "no-store", signal: ctl.signal}});
    if (!r.ok) throw new Error(r.status);
    show(await r.json());
  }} catch (e) {{ if (++fails >= 2) lost(); }}
  finally {{ clearTimeout(timer); setTimeout(poll, 500); }}
}}
$("video").addEventListener("error", () => {{ imgBroken = true; lost(); }});
poll();
</script></body></html>
"""
