// symbi web console: the live audit view. Optional: without JavaScript the page shows the
// recent events and a reload shows newer ones. New events that match the page's filters
// are added at the top of the table; nothing is parsed as HTML.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var table = document.getElementById("audit");
  var form = document.getElementById("filters");
  if (!live || !table || !form || !window.EventSource) {
    return;
  }
  var body = table.tBodies[0];
  var last = 0;
  for (var i = 0; i < body.rows.length; i++) {
    last = Math.max(last, parseInt(body.rows[i].getAttribute("data-seq"), 10) || 0);
  }
  function field(name) {
    var el = form.elements[name];
    return el ? el.value.toLowerCase() : "";
  }
  var want = { identity: field("identity"), action: field("action"), decision: field("decision"), type: field("type") };
  function has(value, sub) {
    return sub === "" || String(value || "").toLowerCase().indexOf(sub) >= 0;
  }
  function matches(ev) {
    return has(ev.identity, want.identity) && has(ev.action, want.action) &&
      (want.decision === "" || ev.decision === want.decision) && (want.type === "" || ev.type === want.type);
  }
  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    row.appendChild(td);
    return td;
  }
  var es = new EventSource(live.getAttribute("data-stream") + "?recent=100");
  es.addEventListener("audit", function (msg) {
    var rec;
    try { rec = JSON.parse(msg.data); } catch (e) { return; }
    var ev = rec.event || {};
    if (rec.seq <= last || !matches(ev)) {
      return;
    }
    last = rec.seq;
    var row = document.createElement("tr");
    row.className = "new";
    row.setAttribute("data-seq", rec.seq);
    cell(row, rec.seq);
    cell(row, String(ev.time || "").replace("T", " ").replace(/\.\d+/, ""));
    cell(row, ev.type);
    cell(row, ev.identity);
    cell(row, ev.action);
    cell(row, ev.upstream);
    cell(row, ev.tool);
    cell(row, ev.decision).className = ev.decision ? "decision-" + ev.decision : "";
    cell(row, ev.outcome);
    cell(row, ev.reason);
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 500) {
      body.deleteRow(body.rows.length - 1);
    }
  });
  es.addEventListener("end", function () { es.close(); });
  live.textContent = "Live: new events appear as they are recorded.";
})();
