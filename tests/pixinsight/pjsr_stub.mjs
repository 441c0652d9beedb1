// SPDX-License-Identifier: MIT
// A fake PixInsight JavaScript Runtime (PJSR) for testing AstroSWIN.js in Node.
//
// The script source is preprocessed (#feature-*, #include, #define lines are
// neutralised), then run in a `vm` context whose globals are the fakes below.
// The fakes enforce the PJSR rules the script could break:
//   - a View's image may only be modified between beginProcess/endProcess;
//   - beginProcess/endProcess must pair up; a closed window cannot be used;
//   - saveAs() must get its 5 arguments and never query options;
//   - ExternalProcess.start() must get a program and an ARRAY of string args;
//   - ImageWindow.open() returns an array (empty when the file can't be read);
//   - File.remove() throws on a missing file (or a folder);
//   - Settings types must match: Settings.write() throws on an unknown DataType or a value
//     not of its type (Boolean: a boolean; Int32/UInt32: an integer in range; Float/Double:
//     a number; String: a string); Settings.read() of a key stored with another DataType
//     fails like a missing key (lastReadOK false, null), as PixInsight gives no value then;
//   - folders as in PCL's File (pcl/File.cpp): File.exists() is true for files only,
//     File.directoryExists() for folders only; File.createDirectory() throws when the
//     folder (or a file of that name) exists, or a parent is missing without
//     createIntermediateDirectories; File.removeDirectory() is rmdir/RemoveDirectoryW:
//     it throws unless the folder exists and is empty; a file (saveAs, the engine's
//     output) can only be written into an existing folder;
//   - FileFind.begin(dir + "/*") lists "." and ".." too (readdir / FindFirstFileW do),
//     and dot files (the engine's temporary file is one).
// Everything observable is recorded on the returned `env` object.

import vm from "node:vm";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
// ASTROSWIN_PJSR_SCRIPT may point at another copy of the script (mutation checks).
export const SCRIPT_PATH = process.env.ASTROSWIN_PJSR_SCRIPT ??
   path.resolve(HERE, "../../plugin/pixinsight/AstroSWIN.js");

// PJSR constants (values as in the pjsr/*.jsh headers where it matters only
// that they are distinct).
export const CONSTANTS = {
   UndoFlag_DefaultMode: 0x00000000,
   UndoFlag_PixelData: 0x00000001,
   UndoFlag_RGBWS: 0x00000002,
   UndoFlag_Keywords: 0x00000004,
   UndoFlag_NoSwapFile: 0xFFFFFFFF,
   ImageOp_Mov: 1,
   ImageOp_Add: 2,
   ImageOp_Sub: 3,
   ImageOp_Mul: 4,
   ImageOp_Div: 5,
   StdButton_NoButton: 0,
   StdButton_Ok: 1,
   StdButton_Cancel: 2,
   StdButton_Yes: 3,
   StdButton_No: 4,
   StdIcon_NoIcon: 0,
   StdIcon_Question: 1,
   StdIcon_Information: 2,
   StdIcon_Warning: 3,
   StdIcon_Error: 4,
   DataType_Boolean: 1,
   DataType_Int32: 6,
   DataType_UInt32: 7,
   DataType_Float: 10,
   DataType_Double: 11,
   DataType_String: 13,
};

// --------------------------------------------------------------------------
// Source preprocessing (the PJSR preprocessor's job in PixInsight)
// --------------------------------------------------------------------------

// What each pjsr/*.jsh header defines, by constant prefix, its own includes followed: the
// constants are preprocessor #defines, so a script that forgets a header fails in PixInsight
// with "X is not defined" and must fail here too.
export const HEADERS = {
   UndoFlag: ["UndoFlag"], ImageOp: ["ImageOp"], StdButton: ["StdButton"], StdIcon: ["StdIcon"],
   DataType: ["DataType"], Sizer: ["Sizer"], NumericControl: ["Sizer", "StdButton", "StdIcon"],
};

function headerDefines(name) {
   const prefixes = HEADERS[name] ?? [];
   const defs = Object.entries(CONSTANTS).filter(([k]) => prefixes.some((p) => k.startsWith(p + "_")));
   return defs.length ? `var ${defs.map(([k, v]) => `${k} = ${v}`).join(", ")};` : "";
}

export function preprocess(source) {
   const lines = source.split("\n");
   const out = [];
   let continued = false;
   for (const line of lines) {
      const t = line.trim();
      if (continued || t.startsWith("#")) {
         continued = t.endsWith("\\");
         const def = /^#define\s+([A-Za-z_$][\w$]*)\s+(.+)$/.exec(t);
         const include = /^#include\s+<pjsr\/(\w+)\.jsh>$/.exec(t);
         // One output line per input line, so stack traces point at the real lines.
         out.push(def && !continued ? `var ${def[1]} = ${def[2]};` : include ? headerDefines(include[1]) : "");
         continue;
      }
      out.push(line);
   }
   return out.join("\n");
}

export function readScript() {
   return fs.readFileSync(SCRIPT_PATH, "utf8");
}

// --------------------------------------------------------------------------
// Helpers
// --------------------------------------------------------------------------

function quantize(v, bits, isReal) {
   if (isReal) return bits === 32 ? Math.fround(v) : v;
   const max = 2 ** bits - 1;
   return Math.round(Math.min(1, Math.max(0, v)) * max) / max;
}

class FakeByteArray {
   constructor(text) { this._text = text; }
   get length() { return this._text.length; }
   toString() { return this._text; }
}

// The default engine output: the stdout of a successful run per the CLI
// contract, with some non-JSON noise and one JSON line split across chunks.
export function defaultStdout(args) {
   const inPath = args[1];
   const outPath = args[args.indexOf("-o") + 1];
   const ev = (o) => JSON.stringify(o) + "\n";
   const progress = [1, 2, 3, 4].map((k) =>
      ev({ event: "progress", file: inPath, done: k, total: 4, fraction: k / 4 }));
   const split = progress[1];
   return [
      "Loading model small ...\n",
      ev({ event: "start", file: inPath, output: outPath, width: 4, height: 3, channels: 1, tiles: 4 }),
      progress[0],
      split.slice(0, 17),
      split.slice(17) + "{not json at all\n",
      progress[2] + "plain log line\r\n",
      progress[3],
      ev({ event: "done", file: inPath, output: outPath, seconds: 12.3 }),
      ev({ event: "summary", ok: 1, failed: 0 }),
   ];
}

// --------------------------------------------------------------------------
// The environment
// --------------------------------------------------------------------------

export function createEnv(options = {}) {
   const env = {
      tempDir: options.tempDir ?? "/tmp/PI Temp/with spaces",
      files: new Map(),          // fake filesystem: path -> entry
      dirs: new Set(),           // existing folders (no trailing slash); the temp dir and its parents
      log: [],                   // ordered record of everything that happened
      windows: [],               // every ImageWindow created (by the script or the test)
      processes: [],             // every ExternalProcess created
      consoleLines: [],          // { kind, text }
      messageBoxes: [],          // { text, caption, icon }
      settings: new Map(),
      settingsWrites: [],
      processEventsCalls: 0,
      onProcessEvents: null,     // (count) => void
      abortRequested: false,
      activeWindow: null,
      dialogs: [],
      onDialogExecute: null,     // (dialog) => bool
      openFileDialogResult: null,
      // The engine scenario used by the next ExternalProcess. Fields:
      //   stdout: (args) => [chunks]   stderr: (args) => [chunks]
      //   exitCode (0), exitStatus (0), hang (false), failStart, throwOnStart,
      //   output: "image" | "none" | "corrupt" | "throwOnOpen" | "wrongSize",
      //   transform: (v) => v', partialOutput: write OUT at the first poll
      engine: {},
      saveAsResult: true,
   };

   const record = (type, data = {}) => env.log.push({ type, ...data });

   // ---- folders ----------------------------------------------------------
   const stripSlash = (p) => { let q = String(p); while (q.length > 1 && /[/\\]$/.test(q)) q = q.slice(0, -1); return q; };
   const parentOf = (p) => { const q = stripSlash(p); const i = q.lastIndexOf("/"); return i <= 0 ? (i === 0 ? "/" : "") : q.slice(0, i); };
   env.addDir = function (dir) {   // a folder and its parents, as on a real disk
      for (let d = stripSlash(dir); d && d !== "/" && !env.dirs.has(d); d = parentOf(d)) env.dirs.add(d);
   };
   env.addDir(env.tempDir);
   // A file can be created only in an existing folder.
   env.canCreateFile = (p) => env.dirs.has(parentOf(p));
   // Direct children (full paths) of a folder: files and folders.
   env.childrenOf = function (dir) {
      const d = stripSlash(dir);
      const kids = [...env.files.keys()].filter((p) => parentOf(p) === d).map((p) => ({ path: p, dir: false }));
      return kids.concat([...env.dirs].filter((p) => parentOf(p) === d).map((p) => ({ path: p, dir: true })));
   };

   // ---- Image ------------------------------------------------------------
   class Image {
      constructor(width, height, numberOfChannels, bitsPerSample, isReal, isColor, data) {
         this._width = width;
         this._height = height;
         this._n = numberOfChannels;
         this._bits = bitsPerSample;
         this._isReal = isReal;
         this._isColor = isColor;
         this._data = data ? data.map((v) => quantize(v, bitsPerSample, isReal))
                           : new Array(width * height * numberOfChannels).fill(0);
         this._view = null;
      }
      get width() { return this._width; }
      get height() { return this._height; }
      get numberOfChannels() { return this._n; }
      get bitsPerSample() { return this._bits; }
      get isReal() { return this._isReal; }
      get isColor() { return this._isColor; }
      get isNull() { return false; }
      get data() { return this._data.slice(); }
      assign(src) {
         if (!(src instanceof Image)) throw new TypeError("Image.assign: source is not an Image");
         if (this._view) {
            this._view._checkOpen();
            if (!this._view._processing)
               throw new Error(`Image.assign on view ${this._view._id} outside beginProcess/endProcess`);
         }
         if (src._view) src._view._checkOpen();
         // Like PCL's ImageVariant: geometry and colour space follow the
         // source; the sample format of this image is kept (converted).
         this._width = src._width;
         this._height = src._height;
         this._n = src._n;
         this._isColor = src._isColor;
         this._data = src._data.map((v) => quantize(v, this._bits, this._isReal));
         record("assign", { view: this._view ? this._view._id : null,
                            from: src._view ? src._view._id : null });
      }
      // Image.apply(scalar, op): only what the script uses (a scalar multiply);
      // like assign, a view's image changes only inside beginProcess/endProcess.
      apply(value, op) {
         if (typeof value !== "number") throw new TypeError("Image.apply: only a scalar is modelled");
         if (op !== CONSTANTS.ImageOp_Mul) throw new TypeError("Image.apply: only ImageOp_Mul is modelled");
         if (this._view) {
            this._view._checkOpen();
            if (!this._view._processing)
               throw new Error(`Image.apply on view ${this._view._id} outside beginProcess/endProcess`);
         }
         this._data = this._data.map((v) => quantize(v * value, this._bits, this._isReal));
         record("apply", { view: this._view ? this._view._id : null, value, op });
      }
   }

   // ---- View -------------------------------------------------------------
   class View {
      constructor(window, id, image, isMainView) {
         this._window = window;
         this._id = id;
         this._image = image;
         this._isMain = isMainView;
         this._processing = false;
         this.processLog = [];
         this.locked = false;
         image._view = this;
      }
      _checkOpen() {
         if (this._window._closed) throw new Error(`view ${this._id} used after its window was closed`);
      }
      get id() { return this._id; }
      set id(v) { this._id = String(v); }
      get image() { this._checkOpen(); return this._image; }
      get window() { return this._window; }
      get isNull() { return false; }
      get isMainView() { return this._isMain; }
      get isPreview() { return !this._isMain; }
      beginProcess(flags) {
         this._checkOpen();
         if (this.locked) throw new Error(`view ${this._id} is locked`);
         if (this._processing) throw new Error(`beginProcess twice on view ${this._id}`);
         this._processing = true;
         this.processLog.push({ op: "begin", flags: arguments.length ? flags : undefined });
         record("beginProcess", { view: this._id, flags });
      }
      endProcess() {
         this._checkOpen();
         if (!this._processing) throw new Error(`endProcess without beginProcess on view ${this._id}`);
         this._processing = false;
         this.processLog.push({ op: "end" });
         record("endProcess", { view: this._id });
      }
   }

   // ---- ImageWindow ------------------------------------------------------
   let autoId = 0;
   class ImageWindow {
      constructor(width, height, numberOfChannels = 1, bitsPerSample = 32, floatSample = true,
                  color = false, id = "") {
         for (const v of [width, height, numberOfChannels, bitsPerSample])
            if (!Number.isInteger(v) || v <= 0) throw new TypeError("ImageWindow: bad geometry/format argument");
         if (typeof floatSample !== "boolean" || typeof color !== "boolean")
            throw new TypeError("ImageWindow: floatSample and color must be booleans");
         let wid = id && String(id).length ? String(id) : `Image${++autoId}`;
         while (env.windows.some((w) => !w._closed && w._mainView._id === wid)) wid += "_1";
         this._closed = false;
         this._keywords = [];
         this._solution = null;
         this.visible = false;
         this.filePath = "";
         this.saveAsCalls = [];
         const image = new Image(width, height, numberOfChannels, bitsPerSample, floatSample, color);
         this._mainView = new View(this, wid, image, true);
         this._currentView = null;
         this._mask = null;        // ImageWindow.mask: another window, or the null window
         this.maskEnabled = false;
         env.windows.push(this);
         record("newWindow", { id: wid, bitsPerSample, floatSample });
      }
      _check() { if (this._closed) throw new Error(`window ${this._mainView._id} used after forceClose()`); }
      static get activeWindow() { return env.activeWindow ?? ImageWindow.nullWindow(); }
      static nullWindow() { return { isNull: true }; }
      static open(filePath, id, formatHints, asCopy) {
         record("open", { path: filePath, asCopy });
         const e = env.files.get(filePath);
         if (!e) return [];
         if (e.kind === "throwOnOpen") throw new Error("XISF: corrupted header");
         if (e.kind !== "image") return [];
         const w = new ImageWindow(e.width, e.height, e.numberOfChannels, e.bitsPerSample,
                                   e.isReal, e.isColor, id || "opened");
         w._mainView._image._data = e.data.slice();
         w._keywords = e.keywords.map((k) => ({ ...k }));
         if (!asCopy) w.filePath = filePath;
         return [w];
      }
      get isNull() { return false; }
      get mask() { this._check(); return this._mask ?? ImageWindow.nullWindow(); }
      set mask(w) {
         this._check();
         if (!(w instanceof ImageWindow)) throw new TypeError("ImageWindow.mask: not an ImageWindow");
         const a = w._mainView._image, b = this._mainView._image;
         if (a.width !== b.width || a.height !== b.height) throw new Error("ImageWindow.mask: incompatible mask geometry");
         this._mask = w;
      }
      get mainView() { this._check(); return this._mainView; }
      get currentView() { this._check(); return this._currentView ?? this._mainView; }
      get keywords() { this._check(); return this._keywords.map((k) => ({ ...k })); }
      set keywords(list) {
         this._check();
         if (!Array.isArray(list)) throw new TypeError("keywords must be an Array");
         this._keywords = list.map((k) => ({ ...k }));
      }
      get hasAstrometricSolution() { this._check(); return this._solution !== null; }
      copyAstrometricSolution(w) {
         this._check();
         if (!(w instanceof ImageWindow)) throw new TypeError("copyAstrometricSolution: not an ImageWindow");
         w._check();
         if (w._solution === null) throw new Error("copyAstrometricSolution: source has no solution");
         this._solution = { ...w._solution };
         record("copyAstrometricSolution", { to: this._mainView._id, from: w._mainView._id });
      }
      saveAs(filePath, queryOptions, allowMessages, strict, verifyOverwrite) {
         this._check();
         if (arguments.length !== 5) throw new Error("saveAs: test stub wants all 5 arguments");
         for (const b of [queryOptions, allowMessages, strict, verifyOverwrite])
            if (typeof b !== "boolean") throw new TypeError("saveAs: flags must be booleans");
         if (queryOptions) throw new Error("saveAs: queryOptions=true would open a dialog");
         if (!/\.(xisf|fits?)$/i.test(filePath)) throw new Error("saveAs: unknown file format " + filePath);
         const img = this._mainView._image;
         this.saveAsCalls.push({ path: filePath, queryOptions, allowMessages, strict, verifyOverwrite });
         record("saveAs", { window: this._mainView._id, path: filePath });
         if (!env.saveAsResult) return false;
         if (!env.canCreateFile(filePath)) { record("saveAsFailed", { path: filePath, reason: "no such folder" }); return false; }
         env.files.set(filePath, {
            kind: "image", width: img._width, height: img._height, numberOfChannels: img._n,
            bitsPerSample: img._bits, isReal: img._isReal, isColor: img._isColor,
            data: img._data.slice(), keywords: this._keywords.map((k) => ({ ...k })),
         });
         this.filePath = filePath;
         return true;
      }
      forceClose() {
         this._check();
         if (this._mainView._processing) throw new Error("forceClose inside beginProcess/endProcess");
         this._closed = true;
         record("close", { window: this._mainView._id });
      }
      show() { this._check(); this.visible = true; record("show", { window: this._mainView._id }); }
      bringToFront() { this._check(); }
      zoomToFit() { this._check(); }
   }

   // Test helper: a user's image window with data, keywords, a solution.
   env.makeUserWindow = function ({ width = 4, height = 3, channels = 1, bits = 32, isReal = true,
                                   id = "M31", keywords = null, solution = true, data = null } = {}) {
      const w = new ImageWindow(width, height, channels, bits, isReal, channels >= 3, id);
      const n = width * height * channels;
      const d = data ?? Array.from({ length: n }, (_, i) => (i + 1) / (n + 2));
      w._mainView._image._data = d.map((v) => quantize(v, bits, isReal));
      w._keywords = keywords ?? [
         { name: "OBJECT", value: "'M31'", comment: "target" },
         { name: "EXPTIME", value: "300", comment: "[s]" },
         { name: "CRVAL1", value: "10.68", comment: "WCS" },
      ];
      w._solution = solution ? { crval: [10.68, 41.27], cd: [[1e-4, 0], [0, 1e-4]] } : null;
      w.filePath = "/data/My Images/M31.xisf";
      w.visible = true;
      env.activeWindow = w;
      return w;
   };
   env.addPreview = function (w, id = "Preview01", width = 2, height = 2) {
      const img = new Image(width, height, w._mainView._image._n, w._mainView._image._bits,
                            w._mainView._image._isReal, w._mainView._image._isColor,
                            Array.from({ length: width * height * w._mainView._image._n }, (_, i) => 0.1 + i / 100));
      const v = new View(w, id, img, false);
      w._currentView = v;
      return v;
   };

   // ---- ExternalProcess --------------------------------------------------
   function ExternalProcess() {
      if (!(this instanceof ExternalProcess)) throw new Error("ExternalProcess must be constructed with new");
      this.scenario = { ...env.engine };
      this.program = null;
      this.args = null;
      this.state = "new";        // new | failed | running | finished | killed
      this.killed = false;
      this.waitCalls = [];
      this.inputAtStart = null;
      this._out = "";
      this._err = "";
      this._outChunks = [];
      this._errChunks = [];
      this._exitCode = 0;
      this._exitStatus = 0;
      env.processes.push(this);
   }
   ExternalProcess.prototype.start = function (program, args) {
      if (this.state !== "new") throw new Error("ExternalProcess.start called twice");
      if (arguments.length !== 2 || typeof program !== "string" || !Array.isArray(args))
         throw new TypeError("test stub: start() must get (program, [arguments])");
      for (const a of args)
         if (typeof a !== "string") throw new TypeError("test stub: every argument must be a string");
      this.program = program;
      this.args = Array.from(args);
      record("start", { program, args: this.args });
      if (this.scenario.throwOnStart) throw new Error("Unable to start process");
      if (this.scenario.failStart) { this.state = "failed"; return; }
      const inEntry = env.files.get(args[1]);
      this.inputAtStart = inEntry ? { ...inEntry, data: inEntry.data.slice() } : null;
      this.state = "running";
      const s = this.scenario;
      this._outChunks = (s.stdout ?? defaultStdout)(this.args).slice();
      this._errChunks = (s.stderr ?? (() => []))(this.args).slice();
      // engine.io.write_image's temporary file, next to the output while the engine writes
      // (scenario.writing: it is writing when stopped). Its exits remove it, SIGKILL cannot.
      if (s.writing) {
         const outPath = this.args[this.args.indexOf("-o") + 1];
         const slash = outPath.lastIndexOf("/");
         this._engineTemp = outPath.slice(0, slash + 1) + "." + outPath.slice(slash + 1) + ".k2j4x9.astroswin-tmp";
         if (env.canCreateFile(this._engineTemp)) env.files.set(this._engineTemp, { kind: "partial" });
         else this._engineTemp = null;
      }
   };
   ExternalProcess.prototype.waitForStarted = function (ms) {
      return this.state === "running" || this.state === "finished";
   };
   ExternalProcess.prototype._writeOutput = function (partial) {
      const s = this.scenario;
      const outPath = this.args[this.args.indexOf("-o") + 1];
      const kind = partial ? "partial" : (s.output ?? "image");
      if (kind === "none") return;
      if (!env.canCreateFile(outPath)) {   // the engine cannot write into a missing folder
         this._err += `astroswin: error: ${outPath}: No such file or directory\n`;
         this._refused = true;
         return;
      }
      if (kind === "corrupt" || kind === "partial") { env.files.set(outPath, { kind }); return; }
      if (kind === "throwOnOpen") { env.files.set(outPath, { kind }); return; }
      const inp = this.inputAtStart;
      if (!inp) return;
      if (inp.numberOfChannels !== 1 && inp.numberOfChannels !== 3) {
         // engine.io.check_image_shape: only mono and RGB
         this._err += `astroswin: error: ${this.args[1]}: image has ${inp.numberOfChannels} planes\n`;
         this._refused = true;
         return;
      }
      const f = s.transform ?? ((v) => v * 0.5 + 0.25);
      let data = inp.data.map(f);
      const keywords = inp.keywords.map((k) => ({ ...k }));
      // engine.io.write_xisf: float output within [0, 1]; divided by its peak (recorded
      // as ASWSCALE) when the input's peak was above 1, else clipped.
      const peak = Math.max(...data);
      if (peak > 1 && Math.max(...inp.data) > 1) {
         data = data.map((v) => v / peak);
         keywords.push({ name: "ASWSCALE", value: String(peak), comment: "AstroSWIN: original = stored * ASWSCALE" });
      }
      data = data.map((v) => Math.min(1, Math.max(0, v)));
      env.files.set(outPath, {
         kind: "image", width: inp.width + (kind === "wrongSize" ? 1 : 0), height: inp.height,
         numberOfChannels: inp.numberOfChannels, bitsPerSample: 32, isReal: true, isColor: inp.isColor,
         data, keywords,
      });
   };
   ExternalProcess.prototype.waitForFinished = function (ms) {
      this.waitCalls.push(ms);
      if (this.state !== "running") return true;
      if (this.scenario.partialOutput && this.waitCalls.length === 1) this._writeOutput(true);
      if (this._outChunks.length || this._errChunks.length) {
         if (this._outChunks.length) this._out += this._outChunks.shift();
         if (this._errChunks.length) this._err += this._errChunks.shift();
         return false;
      }
      if (this.scenario.hang) return false;
      if ((this.scenario.exitCode ?? 0) === 0 && !this.scenario.exitStatus) this._writeOutput(false);
      if (this._engineTemp) env.files.delete(this._engineTemp);
      this._exitCode = this._refused ? 1 : (this.scenario.exitCode ?? 0);
      this._exitStatus = this.scenario.exitStatus ?? 0;
      this.state = "finished";
      record("finished", { exitCode: this._exitCode });
      return true;
   };
   ExternalProcess.prototype.kill = function () {
      this.killed = true;
      if (this.state === "running") {
         this.state = "killed";
         this._exitCode = 9;
         this._exitStatus = 1;
      }
      record("kill", {});
   };
   // QProcess::terminate: SIGTERM on POSIX, which the engine handles like Ctrl-C (its
   // temporary file removed, exit code 130); WM_CLOSE on Windows, which a console program
   // never sees (scenario.ignoreTerminate: it keeps running).
   ExternalProcess.prototype.terminate = function () {
      record("terminate", {});
      if (this.state !== "running" || this.scenario.ignoreTerminate) return;
      if (this._engineTemp) env.files.delete(this._engineTemp);
      this.state = "finished";
      this._exitCode = 130;
      this._exitStatus = 0;
   };
   Object.defineProperties(ExternalProcess.prototype, {
      stdout: { get() { const t = this._out; this._out = ""; return new FakeByteArray(t); } },
      stderr: { get() { const t = this._err; this._err = ""; return new FakeByteArray(t); } },
      exitCode: { get() { return this._exitCode; } },
      exitStatus: { get() { return this._exitStatus; } },
      isRunning: { get() { return this.state === "running"; } },
      isStarting: { get() { return false; } },
   });

   // ---- File -------------------------------------------------------------
   const File = {
      get systemTempDirectory() { return env.tempDir; },
      exists(p) { return env.files.has(p); },   // regular files only, as in PCL
      directoryExists(p) { return env.dirs.has(stripSlash(p)); },
      remove(p) {
         if (!env.files.has(p)) throw new Error("File.remove: no such file: " + p);
         env.files.delete(p);
         record("remove", { path: p });
      },
      // PCL File::CreateDirectory( dirPath, createIntermediateDirectories = true ).
      createDirectory(p, createIntermediateDirectories = true) {
         if (typeof p !== "string" || p.trim().length === 0) throw new Error("File.createDirectory: invalid or empty directory name");
         if (typeof createIntermediateDirectories !== "boolean") throw new TypeError("File.createDirectory: flag must be a boolean");
         const d = stripSlash(p);
         if (env.files.has(d)) throw new Error("Couldn't create directory - a file already exists with the same name: " + p);
         if (env.dirs.has(d)) throw new Error("Unable to create directory: File exists: " + p);
         if (!env.dirs.has(parentOf(d))) {
            if (!createIntermediateDirectories) throw new Error("Unable to create directory: No such file or directory: " + p);
            env.addDir(parentOf(d));
         }
         env.dirs.add(d);
         record("createDirectory", { path: d });
      },
      // PCL File::RemoveDirectory: rmdir() / RemoveDirectoryW(), an empty folder only.
      removeDirectory(p) {
         if (typeof p !== "string" || p.length === 0) throw new Error("File.removeDirectory: invalid or empty directory name");
         const d = stripSlash(p);
         if (!env.dirs.has(d)) throw new Error("Unable to remove directory: No such file or directory: " + p);
         if (env.childrenOf(d).length > 0) throw new Error("Unable to remove directory: Directory not empty: " + p);
         env.dirs.delete(d);
         record("removeDirectory", { path: d });
      },
   };

   // ---- FileFind (PJSR's wrapper of pcl::File::Find) ----------------------
   // begin(path) searches path's folder for names matching its last part (* and ?);
   // true when something matched. Like readdir() and FindFirstFileW(), "." and ".."
   // are items too, as are dot files. The listing is taken at begin().
   function FileFind() {
      if (!(this instanceof FileFind)) throw new Error("FileFind must be constructed with new");
      this._items = [];
      this._i = -1;
   }
   FileFind.prototype.begin = function (path) {
      if (typeof path !== "string" || path.length === 0) throw new Error("FileFind.begin: invalid or empty directory search path");
      this.end();
      const slash = path.lastIndexOf("/");
      const dir = slash < 0 ? "." : (slash === 0 ? "/" : path.slice(0, slash));
      const pattern = path.slice(slash + 1) || "*";
      record("find", { path });
      if (!env.dirs.has(stripSlash(dir))) return false;
      const re = new RegExp("^" + pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
      const items = [{ name: ".", dir: true }, { name: "..", dir: true }].concat(
         env.childrenOf(dir).map((c) => ({ name: c.path.slice(c.path.lastIndexOf("/") + 1), dir: c.dir })));
      this._items = items.filter((it) => re.test(it.name));
      this._i = this._items.length ? 0 : -1;
      return this._i === 0;
   };
   FileFind.prototype.next = function () {
      if (this._i < 0) return false;
      this._i += 1;
      if (this._i >= this._items.length) { this._i = -1; return false; }
      return true;
   };
   FileFind.prototype.end = function () { this._items = []; this._i = -1; };
   const current = (ff) => { if (ff._i < 0) throw new Error("FileFind: no current item"); return ff._items[ff._i]; };
   Object.defineProperties(FileFind.prototype, {
      name: { get() { return current(this).name; } },
      isDirectory: { get() { return current(this).dir; } },
      isFile: { get() { return !current(this).dir; } },
   });

   // ---- Settings ---------------------------------------------------------
   // DataType -> [what a value of it must be, the check].
   const SETTINGS_TYPES = new Map([
      [CONSTANTS.DataType_Boolean, ["a boolean", (v) => typeof v === "boolean"]],
      [CONSTANTS.DataType_Int32, ["an Int32", (v) => Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31]],
      [CONSTANTS.DataType_UInt32, ["a UInt32", (v) => Number.isInteger(v) && v >= 0 && v < 2 ** 32]],
      [CONSTANTS.DataType_Float, ["a number", (v) => typeof v === "number"]],
      [CONSTANTS.DataType_Double, ["a number", (v) => typeof v === "number"]],
      [CONSTANTS.DataType_String, ["a string", (v) => typeof v === "string"]],
   ]);
   const Settings = {
      lastReadOK: false,
      read(key, type) {
         if (!SETTINGS_TYPES.has(type)) throw new TypeError(`Settings.read ${key}: bad data type ${type}`);
         const stored = env.settings.get(key);
         if (stored === undefined || stored.type !== type) { Settings.lastReadOK = false; return null; }
         Settings.lastReadOK = true;
         return stored.value;
      },
      write(key, type, value) {
         const rule = SETTINGS_TYPES.get(type);
         if (rule === undefined) throw new TypeError(`Settings.write ${key}: bad data type ${type}`);
         if (!rule[1](value)) throw new TypeError(`Settings.write ${key}: ${rule[0]} expected, got ${typeof value} ${value}`);
         env.settings.set(key, { type, value });
         env.settingsWrites.push(key);
      },
   };

   // ---- console, MessageBox, processEvents --------------------------------
   const consoleObj = {
      abortEnabled: false,
      get abortRequested() { return env.abortRequested; },
      show() {}, hide() {}, flush() {},
      write(t) { env.consoleLines.push({ kind: "write", text: String(t) }); },
      writeln(t = "") { env.consoleLines.push({ kind: "writeln", text: String(t) }); },
      noteln(t = "") { env.consoleLines.push({ kind: "noteln", text: String(t) }); },
      warningln(t = "") { env.consoleLines.push({ kind: "warningln", text: String(t) }); },
      criticalln(t = "") { env.consoleLines.push({ kind: "criticalln", text: String(t) }); },
   };
   env.console = consoleObj;

   function MessageBox(text, caption, icon, b1) {
      this.text = text; this.caption = caption; this.icon = icon;
   }
   MessageBox.prototype.execute = function () {
      // A modal box blocks the script: note whether an engine it started still runs.
      const enginesRunning = env.processes.filter((p) => p.state === "running").length;
      env.messageBoxes.push({ text: this.text, caption: this.caption, icon: this.icon, enginesRunning });
      record("messageBox", { text: this.text, enginesRunning });
      return CONSTANTS.StdButton_Ok;
   };

   function processEvents() {
      env.processEventsCalls += 1;
      if (env.onProcessEvents) env.onProcessEvents(env.processEventsCalls);
   }

   // ---- GUI classes (ES5 constructors: scripts call Dialog as __base__) ---
   function Control(parent) {
      this.parent = parent ?? null;
      this.toolTip = ""; this.enabled = true; this.visible = true;
      this.minWidth = 0; this.sizer = null; this.text = "";
   }
   for (const m of ["setFixedWidth", "setMinWidth", "setScaledMinWidth", "setScaledFixedWidth",
                    "setFixedSize", "setScaledFixedSize", "adjustToContents", "show", "hide", "update"])
      Control.prototype[m] = function () {};
   const sub = (Base, init) => {
      function C(parent) { Base.call(this, parent); if (init) init.call(this, parent); }
      C.prototype = Object.create(Base.prototype);
      C.prototype.constructor = C;
      return C;
   };
   const Label = sub(Control, function () { this.wordWrapping = false; this.useRichText = false; });
   const Edit = sub(Control, function () { this.onTextUpdated = null; this.onEditCompleted = null; this.readOnly = false; });
   const PushButton = sub(Control, function () { this.onClick = null; });
   const ToolButton = sub(Control, function () { this.onClick = null; });
   const RadioButton = sub(Control, function () { this.checked = false; this.onCheck = null; });
   const CheckBox = sub(Control, function () { this.checked = false; this.onCheck = null; });
   const GroupBox = sub(Control, function () { this.title = ""; });
   const Frame = sub(Control);
   const ComboBox = sub(Control, function () { this.items = []; this.currentItem = 0; this.onItemSelected = null; });
   ComboBox.prototype.addItem = function (t) { this.items.push(String(t)); };
   ComboBox.prototype.itemText = function (i) { return this.items[i]; };
   Object.defineProperty(ComboBox.prototype, "numberOfItems", { get() { return this.items.length; } });
   const NumericControl = sub(Control, function () {
      this.label = new Label(this);
      this.edit = new Edit(this);
      this.slider = { range: null, setRange(a, b) { this.range = [a, b]; } };
      this.range = [0, 1]; this.precision = 2; this.value = 0; this.onValueUpdated = null;
   });
   NumericControl.prototype.setRange = function (a, b) { this.range = [a, b]; };
   NumericControl.prototype.setPrecision = function (p) { this.precision = p; };
   NumericControl.prototype.setReal = function () {};
   NumericControl.prototype.setValue = function (v) {
      if (typeof v !== "number" || !isFinite(v)) throw new TypeError("NumericControl.setValue: number expected");
      this.value = Math.min(this.range[1], Math.max(this.range[0], v));
   };
   function Sizer() { this.items = []; this.margin = 0; this.spacing = 0; }
   Sizer.prototype.add = function (item, stretch) {
      if (item === undefined || item === null) throw new TypeError("Sizer.add: undefined item");
      this.items.push(item);
   };
   Sizer.prototype.addStretch = function () { this.items.push("stretch"); };
   Sizer.prototype.addSpacing = function (n) { this.items.push(n); };
   const HorizontalSizer = sub(Sizer);
   const VerticalSizer = sub(Sizer);
   const Dialog = sub(Control, function () { this.windowTitle = ""; this._result = null; this.userResizable = true; });
   Dialog.prototype.execute = function () {
      env.dialogs.push(this);
      return env.onDialogExecute ? env.onDialogExecute(this) : false;
   };
   Dialog.prototype.ok = function () { this._result = 1; };
   Dialog.prototype.cancel = function () { this._result = 0; };
   function OpenFileDialog() { this.caption = ""; this.multipleSelections = false; this.filters = []; this.fileName = ""; }
   OpenFileDialog.prototype.execute = function () {
      if (env.openFileDialogResult === null) return false;
      this.fileName = env.openFileDialogResult;
      return true;
   };

   const sandbox = {
      ImageWindow, View, Image, ExternalProcess, File, FileFind, Settings,
      console: consoleObj, Console: consoleObj, MessageBox, processEvents,
      Control, Label, Edit, PushButton, ToolButton, RadioButton, CheckBox, GroupBox, Frame,
      ComboBox, NumericControl, Sizer, HorizontalSizer, VerticalSizer, Dialog, OpenFileDialog,
   };
   if (options.testGuard !== false) sandbox.__ASTROSWIN_TEST__ = true;
   env.context = vm.createContext(sandbox);
   env.classes = { ImageWindow, View, Image, ExternalProcess };

   // Load and run the script in the context; its globals become env.context.*
   env.load = function (source = readScript()) {
      vm.runInContext(preprocess(source), env.context, { filename: SCRIPT_PATH });
      return env.context;
   };

   env.consoleText = (kind) =>
      env.consoleLines.filter((l) => !kind || l.kind === kind).map((l) => l.text).join("\n");
   env.tempFiles = () => [...env.files.keys()].filter((p) => p.startsWith(env.tempDir));
   // Folders left in the temporary folder (not the temporary folder itself).
   env.tempDirs = () => [...env.dirs].filter((d) => d.startsWith(stripSlash(env.tempDir) + "/"));
   return env;
}
