// SPDX-License-Identifier: MIT
// Tests for plugin/pixinsight/AstroSWIN.js against the fake PJSR in pjsr_stub.mjs.
// Run: node --test tests/pixinsight/

import { test } from "node:test";
import assert from "node:assert/strict";
import vm from "node:vm";
import { createEnv, readScript, preprocess, CONSTANTS } from "./pjsr_stub.mjs";

// Arrays made inside the vm context have another Array.prototype: copy them
// before deepStrictEqual.
const plain = (x) => JSON.parse(JSON.stringify(x));

function setup(opts = {}) {
   const env = createEnv(opts);
   const ctx = env.load();
   const user = env.makeUserWindow(opts.user ?? {});
   const before = { data: user.mainView.image.data, keywords: user.keywords };
   return { env, ctx, user, before };
}

function params(ctx, fields = {}) {
   const p = new ctx.AstroSWINParameters();
   Object.assign(p, { executable: "/opt/Astro SWIN/bin/astroswin" }, fields);
   return p;
}

function run(env, ctx, user, fields = {}, ui = { showMessages: true }) {
   // The configured executable must "exist" in the fake FS when it is a path.
   const p = params(ctx, fields);
   if (p.executable.includes("/")) env.files.set(p.executable, { kind: "program" });
   return ctx.runAstroSWIN(user, p, ui);
}

function assertUserUntouched(user, before) {
   assert.deepEqual(user.mainView.image.data, before.data, "user's pixels changed");
   assert.deepEqual(user.keywords, before.keywords, "user's keywords changed");
   assert.equal(user.mainView.processLog.length, 0, "beginProcess/endProcess on the user's view");
   assert.equal(user.saveAsCalls.length, 0, "saveAs on the user's window");
   assert.equal(user.filePath, "/data/My Images/M31.xisf");
}

function assertNoTempFiles(env) {
   assert.deepEqual(env.tempFiles(), [], "temporary files left behind");
   assert.deepEqual(env.tempDirs(), [], "temporary folders left behind");
}

function assertOnlyWindowsOpen(env, allowed) {
   const open = env.windows.filter((w) => !w._closed);
   assert.deepEqual(open.map((w) => w._mainView.id).sort(), allowed.slice().sort(),
      "windows left open");
}

// --------------------------------------------------------------------------
// Source / style
// --------------------------------------------------------------------------

// Removes comments, string literals and regex literals, keeping code tokens.
function codeOnly(src) {
   let out = "";
   let i = 0;
   let lastSignificant = "";
   const regexAllowedAfter = "(,=:[!&|?{};+-*%<>~^";
   while (i < src.length) {
      const c = src[i];
      const n = src[i + 1];
      if (c === "/" && n === "/") { while (i < src.length && src[i] !== "\n") i++; continue; }
      if (c === "/" && n === "*") { i = src.indexOf("*/", i + 2) + 2; out += " "; continue; }
      if (c === "\"" || c === "'") {
         const q = c; i++;
         while (i < src.length && src[i] !== q) { if (src[i] === "\\") i++; i++; }
         i++; out += "\"\""; lastSignificant = "\""; continue;
      }
      if (c === "/" && (regexAllowedAfter.includes(lastSignificant) || /return\s*$/.test(out))) {
         i++;
         let inClass = false;
         while (i < src.length && (src[i] !== "/" || inClass)) {
            if (src[i] === "\\") i++;
            else if (src[i] === "[") inClass = true;
            else if (src[i] === "]") inClass = false;
            i++;
         }
         i++;
         while (/[a-z]/.test(src[i] ?? "")) i++;
         out += "/re/"; lastSignificant = "/"; continue;
      }
      out += c;
      if (!/\s/.test(c)) lastSignificant = c;
      i++;
   }
   return out;
}

test("script source is ECMAScript 5 style (PixInsight's engine)", () => {
   const src = readScript();
   assert.ok(!src.includes("=>"), "arrow function (or '=>' anywhere in the file)");
   assert.ok(!src.includes("`"), "backtick / template literal");
   const code = codeOnly(src);
   assert.ok(!/(^|[^\w$.])(let|const)\s+[\w$[{]/m.test(code), "let/const declaration");
   assert.ok(!/(^|[^\w$.])class\s+[\w$]/m.test(code), "class declaration");
   assert.ok(!/\.\.\.[\w$[(]/.test(code), "spread/rest syntax");
   assert.ok(!/\.(startsWith|endsWith|includes|padStart|padEnd|repeat)\(/.test(code), "ES2015+ String method");
   assert.ok(!/for\s*\([^)]*\sof\s/.test(code), "for...of");
   assert.ok(!/\basync\b|\bawait\b|\byield\b/.test(code), "async/await/generators");
   // The comment stripper itself must not have eaten the code.
   assert.ok(code.includes("function runAstroSWIN(targetWindow, params, ui)"));
});

test("script header: feature id, SPDX licence, includes, version constant, test guard", () => {
   const src = readScript();
   assert.match(src, /^#feature-id\s+AstroSWIN\s*:\s*Processing\s*>\s*AstroSWIN\s*$/m);
   assert.match(src, /^#feature-info\s+\S/m);
   assert.match(src, /SPDX-License-Identifier: MIT/);
   for (const h of ["Sizer", "UndoFlag", "StdButton", "StdIcon", "DataType", "ImageOp", "NumericControl"])
      assert.match(src, new RegExp(`^#include <pjsr/${h}\\.jsh>\\s*$`, "m"));
   assert.match(src, /var ASTROSWIN_VERSION = "\d+\.\d+\.\d+";/);
   assert.match(src, /if \(typeof __ASTROSWIN_TEST__ === "undefined"\)\s*\n\s*main\(\);/);
   assert.ok(!/[A-Za-z]:\\\\/.test(src), "hard-coded Windows path");
   // Preprocessed source keeps its line count (stack traces stay accurate).
   assert.equal(preprocess(src).split("\n").length, src.split("\n").length);
});

// --------------------------------------------------------------------------
// Handing the image over
// --------------------------------------------------------------------------

test("the user's image is never touched to hand it over; the clone is 32-bit float and closed", () => {
   const { env, ctx, user, before } = setup({ user: { bits: 16, isReal: false } });
   const r = run(env, ctx, user, { outputMode: "newWindow" });
   assert.equal(r.ok, true, r.message);
   assertUserUntouched(user, before);

   const proc = env.processes[0];
   const handed = proc.inputAtStart;
   assert.ok(handed, "input file did not exist when the engine started");
   assert.equal(handed.bitsPerSample, 32);
   assert.equal(handed.isReal, true);
   assert.equal(handed.width, 4); assert.equal(handed.height, 3); assert.equal(handed.numberOfChannels, 1);
   assert.deepEqual(handed.data, before.data.map(Math.fround), "handed-over pixels differ");
   assert.deepEqual(handed.keywords, before.keywords, "keywords not copied to the clone");

   const clone = env.windows.find((w) => w.saveAsCalls.length > 0);
   assert.ok(clone && clone !== user);
   assert.equal(clone._closed, true, "clone not closed");
   assert.equal(clone.visible, false, "clone was shown");
   assert.deepEqual(plain(clone.saveAsCalls[0]), {
      path: r.inputPath, queryOptions: false, allowMessages: false, strict: true, verifyOverwrite: false });
   assert.match(r.inputPath, /\.xisf$/);
   assert.ok(r.inputPath.startsWith(env.tempDir + "/"));
   // The clone was filled inside its own begin/endProcess with NoSwapFile.
   assert.deepEqual(plain(clone._mainView.processLog), [
      { op: "begin", flags: CONSTANTS.UndoFlag_NoSwapFile }, { op: "end" }]);
   // Clone saved and closed before the engine started.
   const iSave = env.log.findIndex((e) => e.type === "saveAs");
   const iClose = env.log.findIndex((e) => e.type === "close" && e.window === clone._mainView.id);
   const iStart = env.log.findIndex((e) => e.type === "start");
   assert.ok(iSave < iClose && iClose < iStart);
});

test("colour image: clone keeps size, channels and colour space", () => {
   const { env, ctx, user } = setup({ user: { width: 3, height: 2, channels: 3 } });
   const r = run(env, ctx, user);
   assert.equal(r.ok, true, r.message);
   const handed = env.processes[0].inputAtStart;
   assert.equal(handed.numberOfChannels, 3);
   assert.equal(handed.isColor, true);
   assert.equal(handed.width, 3); assert.equal(handed.height, 2);
   assert.equal(user.mainView.image.isColor, true);
});

// --------------------------------------------------------------------------
// Running the engine
// --------------------------------------------------------------------------

test("argument array: exact contents, paths with spaces stay one element", () => {
   const { env, ctx, user } = setup();
   const r = run(env, ctx, user, { strength: 0.35, model: "large v2", device: "cuda" });
   assert.equal(r.ok, true, r.message);
   const proc = env.processes[0];
   assert.equal(proc.program, "/opt/Astro SWIN/bin/astroswin");
   assert.ok(r.inputPath.includes(" ") && r.outputPath.includes(" "), "temp dir has spaces");
   assert.deepEqual(plain(proc.args), [
      "restore", r.inputPath, "-o", r.outputPath, "--progress", "json", "--overwrite",
      "--strength", "0.35", "--model", "large v2", "--device", "cuda"]);
   assert.notEqual(r.inputPath, r.outputPath);
});

test("defaults: executable 'astroswin' from PATH, strength 1, model small, device auto", () => {
   const env = createEnv();
   const ctx = env.load();
   const user = env.makeUserWindow();
   const r = ctx.runAstroSWIN(user, new ctx.AstroSWINParameters(), {});
   assert.equal(r.ok, true, r.message);
   const proc = env.processes[0];
   assert.equal(proc.program, "astroswin");
   assert.deepEqual(plain(proc.args.slice(7)), ["--strength", "1", "--model", "small", "--device", "auto"]);
});

test("parameters are normalised: strength clamped/rounded, quotes stripped, bad device -> auto", () => {
   const { ctx } = setup();
   const p = ctx.astroswinNormalizeParams({ strength: 0.35000000000000003, model: "  ", device: "tpu",
                                             outputMode: "bogus", executable: " \"C:/Py 3/Scripts/astroswin.exe\" " });
   assert.equal(p.strength, 0.35);
   assert.equal(p.model, "small");
   assert.equal(p.device, "auto");
   assert.equal(p.outputMode, "replace");
   assert.equal(p.executable, "C:/Py 3/Scripts/astroswin.exe");
   assert.equal(ctx.astroswinNormalizeParams({ strength: 7 }).strength, 1);
   assert.equal(ctx.astroswinNormalizeParams({ strength: -1 }).strength, 0);
});

test("poll loop: waitForFinished(250) with processEvents between polls", () => {
   const { env, ctx, user } = setup();
   run(env, ctx, user);
   const proc = env.processes[0];
   assert.ok(proc.waitCalls.length > 3);
   assert.ok(proc.waitCalls.every((ms) => ms === 250));
   assert.equal(env.processEventsCalls, proc.waitCalls.length - 1);
});

test("progress JSON lines reach the Console; non-JSON and malformed lines are ignored", () => {
   const { env, ctx, user } = setup();
   const r = run(env, ctx, user);
   assert.equal(r.ok, true, r.message);
   const text = env.consoleText("writeln");
   assert.match(text, /processing 4 x 3 px, 1 channel\(s\), 4 tile\(s\)/);
   for (const pct of [25, 50, 75, 100])
      assert.match(text, new RegExp(`AstroSWIN: ${pct}% \\(${pct / 25}/4 tiles\\)`));
   assert.match(text, /engine finished in 12\.3 s/);
   const all = env.consoleText();
   assert.ok(!all.includes("Loading model"), "non-JSON line echoed");
   assert.ok(!all.includes("plain log line"), "non-JSON line echoed");
   assert.ok(!all.includes("not json"), "malformed JSON echoed");
   assert.equal(env.consoleText("criticalln"), "");
   assert.equal(env.messageBoxes.length, 0);
});

test("progress is throttled to 5% steps (the Console scrolls)", () => {
   const { env, ctx, user } = setup();
   env.engine.stdout = () => {
      const lines = [];
      for (let k = 1; k <= 200; k++)
         lines.push(JSON.stringify({ event: "progress", file: "x", done: k, total: 200, fraction: k / 200 }) + "\n");
      return [lines.join("")];
   };
   const r = run(env, ctx, user);
   assert.equal(r.ok, true, r.message);
   const progress = env.consoleLines.filter((l) => / \d+% /.test(l.text));
   assert.equal(progress.length, 20);
});

test("all stdout arriving at exit (no poll in between) is still parsed", () => {
   const { env, ctx, user } = setup();
   env.engine.stdout = (args) => [];
   env.engine.stderr = () => [];
   // Put everything in the buffer before the final waitForFinished returns true.
   const { ExternalProcess } = env.classes;
   const orig = ExternalProcess.prototype.waitForFinished;
   ExternalProcess.prototype.waitForFinished = function (ms) {
      const r = orig.call(this, ms);
      if (r && this.state === "finished" && !this._burst) {
         this._burst = true;
         this._out += JSON.stringify({ event: "done", file: "x", output: "y", seconds: 1 }) + "\n" +
                      JSON.stringify({ event: "summary", ok: 1, failed: 0 });   // no final newline
      }
      return r;
   };
   try {
      const r = run(env, ctx, user);
      assert.equal(r.ok, true, r.message);
      assert.match(env.consoleText(), /engine finished in 1\.0 s/);
   } finally {
      ExternalProcess.prototype.waitForFinished = orig;
   }
});

// --------------------------------------------------------------------------
// Applying the result
// --------------------------------------------------------------------------

test("replace mode: exactly one undoable beginProcess/endProcess on the target with the result's pixels", () => {
   const { env, ctx, user, before } = setup();
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, true, r.message);
   assert.equal(r.window, null);
   assert.deepEqual(plain(user.mainView.processLog), [
      { op: "begin", flags: CONSTANTS.UndoFlag_PixelData }, { op: "end" }]);
   const expected = before.data.map((v) => Math.fround(Math.fround(v) * 0.5 + 0.25));
   assert.deepEqual(user.mainView.image.data, expected);
   assert.deepEqual(user.keywords, before.keywords);
   assert.equal(user.hasAstrometricSolution, true);
   // Applied only after the engine finished and the result was opened.
   const iBegin = env.log.findIndex((e) => e.type === "beginProcess" && e.view === "M31");
   assert.ok(env.log.findIndex((e) => e.type === "finished") < iBegin);
   assert.ok(env.log.findIndex((e) => e.type === "open") < iBegin);
   assert.equal(env.log.filter((e) => e.type === "assign" && e.view === "M31").length, 1);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
   assert.ok(env.log.some((e) => e.type === "open" && e.asCopy === true));
});

test("replace mode on a 16-bit target: result converted to 16-bit, with a warning", () => {
   const { env, ctx, user, before } = setup({ user: { bits: 16, isReal: false } });
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, true, r.message);
   assert.equal(user.mainView.image.bitsPerSample, 16);
   assert.equal(user.mainView.image.isReal, false);
   const q = (v) => Math.round(v * 65535) / 65535;
   assert.deepEqual(user.mainView.image.data, before.data.map((v) => q(Math.fround(Math.fround(v) * 0.5 + 0.25))));
   assert.match(env.consoleText("warningln"), /16-bit integer.*new-window mode/);
});

test("values above 1: the engine's ASWSCALE is undone, in both modes (the image keeps its units)", () => {
   for (const outputMode of ["replace", "newWindow"]) {
      const data = Array.from({ length: 12 }, (_, i) => 0.1 * (i + 1) + (i === 11 ? 1.0 : 0));  // peak 2.2
      const { env, ctx, user, before } = setup({ user: { data } });
      env.engine.transform = (v) => v;  // --strength 0: a restoration that changes nothing
      const r = run(env, ctx, user, { outputMode });
      assert.equal(r.ok, true, r.message);
      const result = outputMode === "replace" ? user : r.window;
      const got = result.mainView.image.data;
      got.forEach((v, i) => assert.ok(Math.abs(v - before.data[i]) < 1e-6, `${outputMode} pixel ${i}: ${v} != ${before.data[i]}`));
      assert.ok(!result.keywords.some((k) => k.name === "ASWSCALE"));
      assertNoTempFiles(env);
   }
});

test("an image with an alpha channel is refused before anything is written or run", () => {
   for (const channels of [2, 4]) {
      const { env, ctx, user, before } = setup({ user: { channels } });
      const r = run(env, ctx, user, { outputMode: "replace" });
      assert.equal(r.ok, false);
      assert.match(r.message, /mono and RGB.*alpha/);
      assert.equal(env.processes.length, 0);
      assertUserUntouched(user, before);
      assertNoTempFiles(env);
   }
});

test("an active mask: refused in replace mode before the engine runs; new-window mode runs", () => {
   for (const [mode, refused] of [["replace", true], ["newWindow", false]]) {
      const { env, ctx, user, before } = setup();
      const { ImageWindow } = ctx;
      const maskWindow = new ImageWindow(user.mainView.image.width, user.mainView.image.height, 1, 32, true, false, "stars");
      user.mask = maskWindow;
      user.maskEnabled = true;
      const r = run(env, ctx, user, { outputMode: mode });
      assert.equal(r.ok, !refused, r.message);
      if (refused) {
         assert.match(r.message, /mask \(stars\) is active.*new-window mode/);
         assert.equal(env.processes.length, 0);
      }
      assertUserUntouched(user, before);
      assertNoTempFiles(env);
   }
});

test("a disabled mask does not stop replace mode", () => {
   const { env, ctx, user } = setup();
   user.mask = new ctx.ImageWindow(user.mainView.image.width, user.mainView.image.height, 1, 32, true, false, "stars");
   user.maskEnabled = false;
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, true, r.message);
});

test("new-window mode: 32-bit float window with keywords and astrometric solution; original untouched", () => {
   const { env, ctx, user, before } = setup({ user: { bits: 16, isReal: false } });
   const r = run(env, ctx, user, { outputMode: "newWindow" });
   assert.equal(r.ok, true, r.message);
   assertUserUntouched(user, before);
   const nw = r.window;
   assert.ok(nw && !nw._closed && nw.visible);
   assert.equal(nw.mainView.id, "M31_astroswin");
   assert.equal(nw.mainView.image.bitsPerSample, 32);
   assert.equal(nw.mainView.image.isReal, true);
   assert.deepEqual(nw.keywords, before.keywords);
   assert.equal(nw.hasAstrometricSolution, true);
   assert.deepEqual(nw._solution, user._solution);
   assert.deepEqual(nw.mainView.image.data, before.data.map((v) => Math.fround(Math.fround(v) * 0.5 + 0.25)));
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31", "M31_astroswin"]);
});

test("new-window mode without a solution does not try to copy one", () => {
   const { env, ctx, user } = setup({ user: { solution: false } });
   const r = run(env, ctx, user, { outputMode: "newWindow" });
   assert.equal(r.ok, true, r.message);
   assert.equal(r.window.hasAstrometricSolution, false);
   assert.ok(!env.log.some((e) => e.type === "copyAstrometricSolution"));
});

test("a preview as current view: processed alone; no (wrong-size) solution copied", () => {
   const { env, ctx, user, before } = setup({ user: { width: 6, height: 5 } });
   const preview = env.addPreview(user, "Preview01", 2, 2);
   const r = run(env, ctx, user, { outputMode: "newWindow" });
   assert.equal(r.ok, true, r.message);
   assert.equal(env.processes[0].inputAtStart.width, 2);
   assert.equal(r.window.mainView.image.width, 2);
   assert.equal(r.window.hasAstrometricSolution, false);
   assert.equal(preview.processLog.length, 0);
   assertUserUntouched(user, before);
});

// --------------------------------------------------------------------------
// Failures: nothing applied, error shown, temp files always removed
// --------------------------------------------------------------------------

test("non-zero exit: the engine's stderr error line is shown, nothing applied, temp files removed", () => {
   const { env, ctx, user, before } = setup();
   env.engine = {
      exitCode: 2,
      stdout: (args) => [JSON.stringify({ event: "start", file: args[1], width: 4, height: 3, channels: 1, tiles: 4 }) + "\n"],
      stderr: () => ["Traceback (most recent call last):\n  File \"x.py\"\n",
                     "astroswin: error: model 'huge' not found (available: small, large)\n", "\n"],
   };
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, false);
   assertUserUntouched(user, before);
   const crit = env.consoleText("criticalln");
   assert.match(crit, /astroswin: error: model 'huge' not found \(available: small, large\)/);
   assert.match(crit, /exit code 2/);
   assert.equal(env.messageBoxes.length, 1);
   assert.match(env.messageBoxes[0].text, /model 'huge' not found/);
   assert.equal(env.messageBoxes[0].icon, CONSTANTS.StdIcon_Error);
   assert.ok(!env.log.some((e) => e.type === "open"), "tried to open a result after a failure");
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("non-zero exit: the JSON error event's message is preferred", () => {
   const { env, ctx, user, before } = setup();
   env.engine = {
      exitCode: 1,
      stdout: (args) => [JSON.stringify({ event: "error", file: args[1], message: "CUDA out of memory; try --device cpu" }) + "\n",
                         JSON.stringify({ event: "summary", ok: 0, failed: 1 }) + "\n"],
      stderr: () => ["astroswin: error: 1 file(s) failed\n"],
   };
   const r = run(env, ctx, user, { outputMode: "newWindow" });
   assert.equal(r.ok, false);
   assert.match(r.message, /CUDA out of memory; try --device cpu/);
   assert.match(env.messageBoxes[0].text, /CUDA out of memory/);
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("without any message the last non-empty stderr line is shown", () => {
   const { env, ctx, user } = setup();
   env.engine = { exitCode: 1, stdout: () => [], stderr: () => ["  File \"torch.py\"\n", "RuntimeError: boom\n", "\n"] };
   const r = run(env, ctx, user);
   assert.match(r.message, /RuntimeError: boom/);
   assertNoTempFiles(env);
});

test("engine crash (exitStatus != 0) is a failure even with exit code 0", () => {
   const { env, ctx, user, before } = setup();
   env.engine = { exitCode: 0, exitStatus: 1, stdout: () => [], stderr: () => [] };
   const r = run(env, ctx, user);
   assert.equal(r.ok, false);
   assert.match(r.message, /crashed/);
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
});

test("exit 0 but summary reports a failed file: nothing applied", () => {
   const { env, ctx, user, before } = setup();
   env.engine = { stdout: () => [JSON.stringify({ event: "summary", ok: 0, failed: 1 }) + "\n"] };
   const r = run(env, ctx, user);
   assert.equal(r.ok, false);
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
});

test("engine that cannot start: clear message naming the configured executable", () => {
   const { env, ctx, user, before } = setup();
   env.engine = { failStart: true };
   const r = run(env, ctx, user);
   assert.equal(r.ok, false);
   assert.match(r.message, /Could not start the AstroSWIN engine "\/opt\/Astro SWIN\/bin\/astroswin"/);
   assert.match(env.messageBoxes[0].text, /\/opt\/Astro SWIN\/bin\/astroswin/);
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("ExternalProcess.start throwing is reported the same way", () => {
   const { env, ctx, user } = setup();
   env.engine = { throwOnStart: true };
   const r = ctx.runAstroSWIN(user, params(ctx, { executable: "astroswin" }), {});
   assert.equal(r.ok, false);
   assert.match(r.message, /Could not start the AstroSWIN engine "astroswin" \(Unable to start process\)/);
   assertNoTempFiles(env);
});

test("a missing executable path fails before any temp file is written", () => {
   const { env, ctx, user } = setup();
   const r = ctx.runAstroSWIN(user, params(ctx, { executable: "/nowhere/astroswin" }), {});
   assert.equal(r.ok, false);
   assert.match(r.message, /executable was not found: \/nowhere\/astroswin/);
   assert.equal(env.processes.length, 0);
   assert.ok(!env.log.some((e) => e.type === "saveAs"));
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("abort (console.abortRequested): engine terminated, nothing applied, temp files removed", () => {
   const { env, ctx, user, before } = setup();
   env.engine = { hang: true, partialOutput: true, writing: true };
   env.onProcessEvents = (n) => { if (n === 5) env.abortRequested = true; };
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, false);
   assert.equal(r.aborted, true);
   const proc = env.processes[0];
   assert.equal(proc.state, "finished");
   assert.equal(proc.killed, false, "killed although it stopped on terminate()");
   assert.deepEqual(env.log.filter((e) => e.type === "terminate" || e.type === "kill").map((e) => e.type), ["terminate"]);
   assert.ok(proc.waitCalls.length < 20, "kept polling after the abort");
   assert.equal(env.console.abortEnabled, false, "abort button left enabled");
   assertUserUntouched(user, before);
   assert.equal(env.messageBoxes.length, 0, "modal box after a user abort");
   assert.match(env.consoleText("warningln"), /Aborted/);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("abort through the ui cancel flag works the same way", () => {
   const { env, ctx, user, before } = setup();
   env.engine = { hang: true };
   let polls = 0;
   const r = run(env, ctx, user, {}, { cancelRequested: () => ++polls >= 3 });
   assert.equal(r.aborted, true);
   assert.equal(env.processes[0].state, "finished");
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
});

test("abort where terminate() is not seen (Windows): killed after the grace period", () => {
   const { env, ctx, user, before } = setup();
   env.engine = { hang: true, ignoreTerminate: true };
   env.onProcessEvents = (n) => { if (n === 3) env.abortRequested = true; };
   const r = run(env, ctx, user, {});
   assert.equal(r.aborted, true);
   const proc = env.processes[0];
   assert.deepEqual(env.log.filter((e) => e.type === "terminate" || e.type === "kill").map((e) => e.type), ["terminate", "kill"]);
   assert.equal(proc.state, "killed");
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
});

test("abort where terminate() is not seen (Windows) while the engine writes: its temp file goes with the run folder", () => {
   // kill() bypasses the engine's own clean-up: the temporary file it writes next to
   // its output stays behind, and only removing the run's folder whole catches it.
   const { env, ctx, user, before } = setup();
   env.engine = { hang: true, ignoreTerminate: true, writing: true, partialOutput: true };
   env.onProcessEvents = (n) => { if (n === 3) env.abortRequested = true; };
   const r = run(env, ctx, user, {});
   assert.equal(r.aborted, true);
   const proc = env.processes[0];
   assert.equal(proc.state, "killed");
   const engineTemp = proc._engineTemp;
   assert.ok(engineTemp, "the engine was not writing");
   assert.ok(!env.files.has(engineTemp), "the engine's temporary file was left behind: " + engineTemp);
   assert.ok(engineTemp.startsWith(r.tempFolder + "/."), "the engine was not writing in the run folder");
   const iKill = env.log.findIndex((e) => e.type === "kill");
   const iRemoveTemp = env.log.findIndex((e) => e.type === "remove" && e.path === engineTemp);
   assert.ok(iKill >= 0 && iRemoveTemp > iKill, "the engine's temporary file was not removed after the kill");
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
});

test("unexpected error while the engine runs: the engine is stopped before the error box", () => {
   for (const ignoreTerminate of [false, true]) {   // POSIX: terminate() is enough; Windows: kill()
      const { env, ctx, user, before } = setup();
      env.engine = { hang: true, ignoreTerminate, writing: true };
      env.onProcessEvents = (n) => { if (n === 3) throw new Error("GUI exploded"); };
      const r = run(env, ctx, user, {});
      assert.equal(r.ok, false);
      assert.match(r.message, /Unexpected error: GUI exploded/);
      assert.equal(env.messageBoxes.length, 1);
      assert.equal(env.messageBoxes[0].enginesRunning, 0, "error box shown while the engine still runs");
      const iStop = env.log.findIndex((e) => e.type === (ignoreTerminate ? "kill" : "terminate"));
      const iBox = env.log.findIndex((e) => e.type === "messageBox");
      assert.ok(iStop >= 0 && iStop < iBox, "engine stopped only after the error box");
      assert.notEqual(env.processes[0].state, "running");
      assertUserUntouched(user, before);
      assertNoTempFiles(env);
      assertOnlyWindowsOpen(env, ["M31"]);
   }
});

test("abort enables the Console's Abort button while the engine runs", () => {
   const { env, ctx, user } = setup();
   const seen = [];
   env.onProcessEvents = () => seen.push(env.console.abortEnabled);
   run(env, ctx, user);
   assert.ok(seen.length > 0 && seen.every(Boolean));
   assert.equal(env.console.abortEnabled, false);
});

for (const [kind, pattern] of [["corrupt", /Could not open the engine's output/],
                               ["throwOnOpen", /XISF: corrupted header/],
                               ["none", /wrote no output file/],
                               ["wrongSize", /wrong geometry/]]) {
   test(`output that can't be used (${kind}): error shown, nothing applied, temp files removed`, () => {
      const { env, ctx, user, before } = setup();
      env.engine = { output: kind };
      const r = run(env, ctx, user, { outputMode: "replace" });
      assert.equal(r.ok, false);
      assert.match(r.message, pattern);
      assert.equal(env.messageBoxes.length, 1);
      assertUserUntouched(user, before);
      assertNoTempFiles(env);
      assertOnlyWindowsOpen(env, ["M31"]);
   });
}

test("exception while applying (locked view): reported, result window closed, temp files removed", () => {
   const { env, ctx, user, before } = setup();
   user.mainView.locked = true;
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, false);
   assert.match(r.message, /Unexpected error: view M31 is locked/);
   assert.deepEqual(user.mainView.image.data, before.data);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

function failAssignOnce(env, when) {
   const { Image } = env.classes;
   const orig = Image.prototype.assign;
   Image.prototype.assign = function (src) {
      if (when(this)) { Image.prototype.assign = orig; throw new Error("out of memory"); }
      return orig.call(this, src);
   };
   return () => { Image.prototype.assign = orig; };
}

test("exception while filling the clone: clone closed, nothing run, nothing left behind", () => {
   const { env, ctx, user, before } = setup();
   const restore = failAssignOnce(env, (img) => img._view && img._view.id === "AstroSWIN_input");
   try {
      const r = run(env, ctx, user);
      assert.equal(r.ok, false);
      assert.match(r.message, /Unexpected error: out of memory/);
      assert.equal(env.processes.length, 0);
      assertUserUntouched(user, before);
      assertNoTempFiles(env);
      assertOnlyWindowsOpen(env, ["M31"]);
   } finally { restore(); }
});

test("exception while filling the new window: it is closed again, temp files removed", () => {
   const { env, ctx, user, before } = setup();
   const restore = failAssignOnce(env, (img) => img._view && img._view.id === "M31_astroswin");
   try {
      const r = run(env, ctx, user, { outputMode: "newWindow" });
      assert.equal(r.ok, false);
      assert.equal(r.window, null);
      assertUserUntouched(user, before);
      assertNoTempFiles(env);
      assertOnlyWindowsOpen(env, ["M31"]);
   } finally { restore(); }
});

test("error text is HTML-escaped in the MessageBox", () => {
   const { env, ctx, user } = setup();
   env.engine = { exitCode: 1, stdout: () => [], stderr: () => ["astroswin: error: cannot read <stdin> & co\n"] };
   run(env, ctx, user);
   assert.match(env.messageBoxes[0].text, /cannot read &lt;stdin&gt; &amp; co/);
});

test("saveAs failing: reported, no engine run, nothing left behind", () => {
   const { env, ctx, user } = setup();
   env.saveAsResult = false;
   const r = run(env, ctx, user);
   assert.equal(r.ok, false);
   assert.match(r.message, /Could not write the temporary input file/);
   assert.equal(env.processes.length, 0);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("showMessages:false logs the error without a modal MessageBox", () => {
   const { env, ctx, user } = setup();
   env.engine = { exitCode: 3, stdout: () => [], stderr: () => ["astroswin: error: bad input\n"] };
   const r = run(env, ctx, user, {}, { showMessages: false });
   assert.equal(r.ok, false);
   assert.equal(env.messageBoxes.length, 0);
   assert.match(env.consoleText("criticalln"), /bad input/);
});

test("no image window: reported, nothing run", () => {
   const env = createEnv();
   const ctx = env.load();
   const r = ctx.runAstroSWIN(ctx.ImageWindow.activeWindow, new ctx.AstroSWINParameters(), {});
   assert.equal(r.ok, false);
   assert.match(r.message, /no image window/);
   assert.equal(env.processes.length, 0);
});

// --------------------------------------------------------------------------
// The run's temporary folder
// --------------------------------------------------------------------------

test("stub: folders, FileFind and file writes follow PCL's rules", () => {
   const env = createEnv();
   const ctx = env.load();
   const { File, FileFind } = ctx;
   const d = env.tempDir + "/run";
   assert.equal(File.directoryExists(env.tempDir), true);
   assert.throws(() => File.createDirectory(env.tempDir + "/a/b", false), /No such file or directory/);
   File.createDirectory(d, true);
   assert.throws(() => File.createDirectory(d, true), /exists/);
   assert.equal(File.directoryExists(d), true);
   assert.equal(File.exists(d), false, "File.exists is for files only");
   env.files.set(d + "/x.xisf", { kind: "partial" });
   env.files.set(d + "/.x.xisf.k2j4x9.astroswin-tmp", { kind: "partial" });
   assert.throws(() => File.removeDirectory(d), /not empty/);
   assert.throws(() => File.remove(d), /no such file/);
   const ff = new FileFind;
   const seen = [];
   assert.equal(ff.begin(d + "/*"), true);
   do seen.push([ff.name, ff.isDirectory]); while (ff.next());
   ff.end();
   assert.deepEqual(seen.sort(), [[".", true], ["..", true], [".x.xisf.k2j4x9.astroswin-tmp", false], ["x.xisf", false]]);
   assert.equal(ff.begin(d + "/*.fits"), false);
   assert.equal(ff.begin(env.tempDir + "/missing/*"), false);
   File.remove(d + "/x.xisf");
   File.remove(d + "/.x.xisf.k2j4x9.astroswin-tmp");
   File.removeDirectory(d);
   assert.throws(() => File.removeDirectory(d), /No such file or directory/);
   const w = new ctx.ImageWindow(2, 2, 1, 32, true, false, "w");
   assert.equal(w.saveAs(env.tempDir + "/missing/in.xisf", false, false, true, false), false);
   assert.equal(w.saveAs(env.tempDir + "/in.xisf", false, false, true, false), true);
});

test("each run works in a folder of its own, created first and removed whole at the end", () => {
   const { env, ctx, user } = setup();
   const r = run(env, ctx, user);
   assert.equal(r.ok, true, r.message);
   assert.ok(r.tempFolder.startsWith(env.tempDir + "/AstroSWIN_"), r.tempFolder);
   for (const path of [r.inputPath, r.outputPath])
      assert.equal(path.slice(0, path.lastIndexOf("/")), r.tempFolder);
   const at = (type, path) => env.log.findIndex((e) => e.type === type && (path === undefined || e.path === path));
   assert.ok(at("createDirectory", r.tempFolder) >= 0 && at("createDirectory", r.tempFolder) < at("saveAs"));
   assert.ok(at("saveAs") < at("start"));
   // every file first, then the folder, once the result has been read back
   const iRemoveDir = at("removeDirectory", r.tempFolder);
   assert.ok(iRemoveDir > at("remove", r.inputPath) && iRemoveDir > at("remove", r.outputPath));
   assert.ok(at("remove", r.inputPath) > at("open"));
   assert.equal(ctx.File.directoryExists(r.tempFolder), false);
   assertNoTempFiles(env);
});

test("a run folder whose name is taken (another PixInsight) is skipped for a free one", () => {
   const { env, ctx, user } = setup();
   vm.runInContext(`Date.now = function () { return 1700000000000; };
                    Math.random = function () { return 0.5; };`, ctx);
   env.addDir(env.tempDir + "/AstroSWIN_1700000000000_500000000_1");   // the next name
   const r = run(env, ctx, user);
   assert.equal(r.ok, true, r.message);
   assert.equal(r.tempFolder, env.tempDir + "/AstroSWIN_1700000000000_500000000_2");
   assert.deepEqual(env.tempDirs(), [env.tempDir + "/AstroSWIN_1700000000000_500000000_1"], "someone else's folder touched");
});

test("no temporary folder can be created: reported, nothing written or run", () => {
   const { env, ctx, user, before } = setup();
   ctx.File.createDirectory = function () { throw new Error("Unable to create directory: Permission denied"); };
   const r = run(env, ctx, user);
   assert.equal(r.ok, false);
   assert.match(r.message, /Could not create a temporary folder in .*Permission denied/);
   assert.equal(env.processes.length, 0);
   assert.ok(!env.log.some((e) => e.type === "saveAs"));
   assertUserUntouched(user, before);
   assertNoTempFiles(env);
   assertOnlyWindowsOpen(env, ["M31"]);
});

test("a temp file that cannot be removed: a warning naming the folder, the result still applied", () => {
   const { env, ctx, user } = setup();
   const remove = ctx.File.remove;
   ctx.File.remove = function (path) {
      if (/AstroSWIN_out\.xisf$/.test(path)) throw new Error("Unable to delete file: Access is denied");
      return remove(path);
   };
   const r = run(env, ctx, user, { outputMode: "replace" });
   assert.equal(r.ok, true, r.message);
   const warnings = env.consoleText("warningln");
   assert.match(warnings, /could not remove temporary file .*AstroSWIN_out\.xisf: Unable to delete file: Access is denied/);
   assert.ok(warnings.includes("could not remove the temporary folder " + r.tempFolder + " (remove it by hand)"));
   assert.deepEqual(env.tempFiles(), [r.outputPath]);
   assert.equal(env.messageBoxes.length, 0);
});

// --------------------------------------------------------------------------
// Temp names
// --------------------------------------------------------------------------

test("two runs get different temp names, even with a frozen clock and random source", () => {
   const { env, ctx, user } = setup();
   const a = run(env, ctx, user);
   const b = run(env, ctx, user);
   assert.ok(a.ok && b.ok);
   const names = [a.inputPath, a.outputPath, b.inputPath, b.outputPath];
   assert.equal(new Set(names).size, 4);
   assert.deepEqual(plain(env.processes.map((p) => p.args[1])), [a.inputPath, b.inputPath]);

   ctxFreeze(ctx);
   const p1 = ctx.astroswinTempPaths();
   const p2 = ctx.astroswinTempPaths();
   assert.notEqual(p1.input, p2.input);
   assert.notEqual(p1.output, p2.output);
   assert.match(p1.folder, /\/AstroSWIN_1700000000000_123456789_\d+$/);
   assert.equal(p1.input, p1.folder + "/AstroSWIN_in.xisf");
   assert.equal(p1.output, p1.folder + "/AstroSWIN_out.xisf");

   // A second script instance (a new PixInsight run) with the same frozen
   // clock differs through the random part.
   const env2 = createEnv();
   const ctx2 = env2.load();
   ctxFreeze(ctx2, 0.987654321);
   const q = ctx2.astroswinTempPaths();
   assert.notEqual(q.input, ctx.astroswinTempPaths().input);
});

function ctxFreeze(ctx, rnd = 0.123456789) {
   vm.runInContext(`Date.now = function () { return 1700000000000; };
                    Math.random = function () { return ${rnd}; };`, ctx);
}

test("temp dir with a trailing slash does not produce '//'", () => {
   const env = createEnv({ tempDir: "/tmp/x y/" });
   const ctx = env.load();
   const p = ctx.astroswinTempPaths();
   assert.ok(p.input.startsWith("/tmp/x y/AstroSWIN_"), p.input);
});

// --------------------------------------------------------------------------
// Settings, dialog, main()
// --------------------------------------------------------------------------

test("Settings: defaults when nothing stored; round trip under the AstroSWIN/ prefix", () => {
   const env = createEnv();
   const ctx = env.load();
   const p = new ctx.AstroSWINParameters();
   p.load();
   assert.deepEqual(plain(p), { strength: 1, model: "small", device: "auto", outputMode: "replace", executable: "astroswin" });

   Object.assign(p, { strength: 0.4, model: "large", device: "mps", outputMode: "newWindow", executable: "/a b/astroswin" });
   p.save();
   assert.deepEqual([...env.settings.keys()].sort(), [
      "AstroSWIN/device", "AstroSWIN/executable", "AstroSWIN/model", "AstroSWIN/outputMode", "AstroSWIN/strength"]);
   assert.equal(env.settings.get("AstroSWIN/strength").type, CONSTANTS.DataType_Double);
   const q = new ctx.AstroSWINParameters();
   q.load();
   assert.deepEqual(plain(q), plain(p));

   env.settings.set("AstroSWIN/device", { type: CONSTANTS.DataType_String, value: "quantum" });
   env.settings.set("AstroSWIN/strength", { type: CONSTANTS.DataType_Double, value: 9 });
   const r = new ctx.AstroSWINParameters();
   r.load();
   assert.equal(r.device, "auto");
   assert.equal(r.strength, 1);
});

test("stub: Settings types must match, on write and on read", () => {
   // Without this, the script could read a value with another DataType than it wrote
   // (PixInsight then gives no value) and still pass the round trip above.
   const env = createEnv();
   const { Settings } = env.load();
   const T = CONSTANTS;
   for (const [type, good, bad] of [[T.DataType_Boolean, true, 1], [T.DataType_Int32, -5, 1.5],
                                    [T.DataType_UInt32, 7, -1], [T.DataType_Float, 0.5, "0.5"],
                                    [T.DataType_Double, 0.25, "0.25"], [T.DataType_String, "cpu", 3]]) {
      assert.throws(() => Settings.write("k", type, bad), /expected/, `type ${type} took ${bad}`);
      Settings.write("k", type, good);
      assert.equal(Settings.read("k", type), good);
      assert.equal(Settings.lastReadOK, true);
      const other = type === T.DataType_String ? T.DataType_Double : T.DataType_String;
      assert.equal(Settings.read("k", other), null);
      assert.equal(Settings.lastReadOK, false);
   }
   assert.throws(() => Settings.write("k", 999, 1), /bad data type/);
   assert.throws(() => Settings.read("k", 999), /bad data type/);
});

test("dialog: controls reflect and update the parameters", () => {
   const env = createEnv();
   const ctx = env.load();
   const p = new ctx.AstroSWINParameters();
   p.device = "cuda";
   p.outputMode = "newWindow";
   const d = new ctx.AstroSWINDialog(p);
   assert.ok(d instanceof ctx.Dialog);
   assert.equal(d.strengthControl.value, 1);
   assert.deepEqual(plain(d.strengthControl.range), [0, 1]);
   assert.equal(d.modelEdit.text, "small");
   assert.deepEqual(plain(d.deviceCombo.items), ["auto", "cpu", "cuda", "mps"]);
   assert.equal(d.deviceCombo.currentItem, 2);
   assert.equal(d.newWindowRadio.checked, true);
   assert.equal(d.replaceRadio.checked, false);
   assert.equal(d.exeEdit.text, "astroswin");

   d.strengthControl.onValueUpdated(0.25);
   d.modelEdit.onTextUpdated(" large ");
   d.deviceCombo.onItemSelected(1);
   d.replaceRadio.onCheck(true);
   env.openFileDialogResult = "/home/me/My Env/bin/astroswin";
   d.exeBrowse.onClick();
   assert.equal(d.exeEdit.text, "/home/me/My Env/bin/astroswin");
   d.okButton.onClick();
   assert.equal(d._result, 1);
   assert.deepEqual(plain(p), { strength: 0.25, model: "large", device: "cpu", outputMode: "replace",
                                executable: "/home/me/My Env/bin/astroswin" });
   d.cancelButton.onClick();
   assert.equal(d._result, 0);
});

test("main() is not run under the test guard", () => {
   const env = createEnv();
   env.load();
   assert.equal(env.dialogs.length, 0);
   assert.equal(env.messageBoxes.length, 0);
});

test("main() without the guard: no image -> message; cancel -> nothing; OK -> run + settings saved", () => {
   // No active window.
   let env = createEnv({ testGuard: false });
   env.load();
   assert.equal(env.messageBoxes.length, 1);
   assert.match(env.messageBoxes[0].text, /Open an image first/);

   // Dialog cancelled.
   env = createEnv({ testGuard: false });
   env.makeUserWindow();
   env.onDialogExecute = () => false;
   env.load();
   assert.equal(env.dialogs.length, 1);
   assert.equal(env.processes.length, 0);
   assert.equal(env.settingsWrites.length, 0);

   // Dialog accepted: runs with the dialog's parameters, then saves them.
   env = createEnv({ testGuard: false });
   const user = env.makeUserWindow();
   env.settings.set("AstroSWIN/model", { type: CONSTANTS.DataType_String, value: "large" });
   env.onDialogExecute = (d) => { d.strengthControl.onValueUpdated(0.5); d.okButton.onClick(); return d._result === 1; };
   env.load();
   assert.equal(env.processes.length, 1);
   assert.deepEqual(plain(env.processes[0].args.slice(7)), ["--strength", "0.5", "--model", "large", "--device", "auto"]);
   assert.equal(env.settings.get("AstroSWIN/strength").value, 0.5);
   assert.equal(user.mainView.processLog.length, 2);
   assertNoTempFiles(env);
});
