// Checks the proof-of-work solver of the waiting-room page (crates/server/src/pages/room.html)
// against Node's own SHA-256: the page's hash on known inputs, and a solved puzzle.
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const path = require("path");

const html = fs.readFileSync(path.join(__dirname, "../crates/server/src/pages/room.html"), "utf8");
const start = html.indexOf("const K = new Uint32Array");
const end = html.indexOf("function show(");
if (start < 0 || end < 0) throw new Error("the solver was not found in the page");
const solver = new Function(html.slice(start, end) + "; return { sha256, leadingZeroBits, solve };")();

const encoder = new TextEncoder();
const hex = (bytes) => Buffer.from(bytes).toString("hex");
for (const text of ["", "abc", "a".repeat(55), "a".repeat(56), "a".repeat(64), "é".repeat(300)]) {
  const mine = hex(solver.sha256(encoder.encode(text)));
  const node = crypto.createHash("sha256").update(text, "utf8").digest("hex");
  if (mine !== node) throw new Error(`sha256 of ${JSON.stringify(text.slice(0, 10))}: ${mine} != ${node}`);
}
solver.solve("p1.check.1800000000000.12.abc", 12).then((header) => {
  const bits = solver.leadingZeroBits(crypto.createHash("sha256").update(header).digest());
  if (bits < 12) throw new Error(`${header} has ${bits} zero bits`);
  console.log("room page solver: ok");
});
