// Playground: one request through the gateway with a client key, as any client sends it; the
// answer streamed (fetch + ReadableStream), the request and response JSON, and Server-Timing.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var offered = null;
  try { offered = sessionStorage.getItem("console.newKey"); } catch (e) { /* private mode */ }
  if (offered && !$("try-key").value) {
    $("try-key").value = offered;
    $("try-status").textContent = "using the key you just created";
  }

  function body(api, model, prompt, stream) {
    if (api === "responses") return { model: model, input: prompt, stream: stream };
    var chat = { model: model, messages: [{ role: "user", content: prompt }], stream: stream };
    if (stream) chat.stream_options = { include_usage: true };
    return chat;
  }

  function showTiming(header) {
    var tbody = $("try-timing").tBodies[0];
    tbody.textContent = "";
    (header || "").split(",").forEach(function (part) {
      var bits = part.trim().split(";"), name = bits[0], dur = "";
      bits.slice(1).forEach(function (b) { if (b.trim().indexOf("dur=") === 0) dur = b.trim().slice(4); });
      if (!name) return;
      var tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
      th.scope = "row"; th.textContent = name; td.textContent = dur; td.className = "num";
      tr.appendChild(th); tr.appendChild(td); tbody.appendChild(tr);
    });
  }

  function textOf(api, json) {
    if (api === "responses") {
      return (json.output || []).map(function (item) {
        return (item.content || []).map(function (c) { return c.type === "output_text" ? c.text : ""; }).join("");
      }).join("");
    }
    return json.choices && json.choices[0] && json.choices[0].message ? json.choices[0].message.content || "" : "";
  }

  function deltaOf(api, event, data) {
    if (api === "responses") return event === "response.output_text.delta" || data.type === "response.output_text.delta" ? data.delta : "";
    var choice = data.choices && data.choices[0];
    return choice && choice.delta && choice.delta.content ? choice.delta.content : "";
  }

  async function readStream(api, response) {
    var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "", events = [];
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        var raw = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        var name = "", data = "";
        raw.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) name = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data += line.slice(5).trim();
        });
        if (!data || data === "[DONE]") continue;
        var parsed;
        try { parsed = JSON.parse(data); } catch (e) { continue; }
        events.push(name ? { event: name, data: parsed } : parsed);
        $("try-answer").textContent += deltaOf(api, name, parsed);
      }
    }
    return events;
  }

  $("playground").addEventListener("submit", async function (event) {
    event.preventDefault();
    var api = $("try-api").value, stream = $("try-stream").checked;
    var path = api === "responses" ? "/v1/responses" : "/v1/chat/completions";
    var request = body(api, $("try-model").value.trim(), $("try-prompt").value, stream);
    $("try-request").textContent = "POST " + path + "\n" + JSON.stringify(request, null, 2);
    $("try-answer").textContent = "";
    $("try-response").textContent = "";
    $("try-status").textContent = "sending…";
    $("try-send").disabled = true;
    var started = performance.now();
    try {
      var response = await fetch(path, {
        method: "POST",
        credentials: "omit",
        headers: { "content-type": "application/json", authorization: "Bearer " + $("try-key").value.trim() },
        body: JSON.stringify(request),
      });
      showTiming(response.headers.get("server-timing"));
      var type = response.headers.get("content-type") || "";
      if (response.ok && type.indexOf("text/event-stream") === 0) {
        var events = await readStream(api, response);
        // One event a line: a stream reads best as the sequence it was.
        $("try-response").textContent = "HTTP " + response.status + " · " + events.length + " events\n" +
          events.map(function (e) { return JSON.stringify(e); }).join("\n");
      } else {
        var json = await response.json();
        $("try-response").textContent = "HTTP " + response.status + "\n" + JSON.stringify(json, null, 2);
        $("try-answer").textContent = response.ok ? textOf(api, json) : (json.error && json.error.message) || "";
      }
      $("try-status").textContent = "HTTP " + response.status + " in " + Math.round(performance.now() - started) + " ms";
    } catch (error) {
      $("try-status").textContent = "failed: " + error.message;
    } finally {
      $("try-send").disabled = false;
    }
  });
})();
