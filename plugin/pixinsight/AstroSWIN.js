// ----------------------------------------------------------------------------
// AstroSWIN.js - PixInsight (PJSR) front end for the AstroSWIN engine.
//
// SPDX-License-Identifier: MIT
// Copyright (c) AstroSWIN contributors
//
// Learned deconvolution + denoise for LINEAR astronomical images. The heavy
// work is done by the "astroswin" command line engine (Python); this script:
//
//   1. copies the active view into a hidden 32-bit float window, saves that
//      copy as XISF into a temporary folder of its own for this run and
//      closes it (the user's own image is never converted, saved or otherwise
//      touched to hand it over);
//   2. runs "astroswin restore IN -o OUT --progress json ..." through
//      ExternalProcess with an argument array (paths with spaces are safe),
//      shows progress in the Console and lets the user abort;
//   3. reads the result back and either replaces the target (one undoable
//      step) or opens it in a new window carrying the FITS keywords and the
//      astrometric solution of the original;
//   4. removes that folder whole (every file in it, then the folder) on every
//      path (success, failure, abort, exception): also what a killed engine
//      could not clean up itself, such as the temporary file it writes next to
//      its output (Windows has no SIGTERM for a console program, so an abort
//      there ends in kill()).
//
// Written for PixInsight's JavaScript engine: ECMAScript 5 style only.
// ----------------------------------------------------------------------------

#feature-id    AstroSWIN : Processing > AstroSWIN
#feature-info  Learned deconvolution and denoising of linear astronomical \
               images with the AstroSWIN engine (runs the external \
               <i>astroswin</i> command line program).

#include <pjsr/Sizer.jsh>
#include <pjsr/UndoFlag.jsh>
#include <pjsr/StdButton.jsh>
#include <pjsr/StdIcon.jsh>
#include <pjsr/DataType.jsh>
#include <pjsr/ImageOp.jsh>
#include <pjsr/NumericControl.jsh>

var ASTROSWIN_VERSION = "0.1.0";
var ASTROSWIN_TITLE = "AstroSWIN";
var ASTROSWIN_SETTINGS_PREFIX = "AstroSWIN/";

// The engine executable. "astroswin" is looked up on the PATH. On Windows,
// pip installs it as astroswin.exe in the Scripts folder of the Python
// installation (or of the virtual environment) used to install AstroSWIN;
// PixInsight usually does not see the user's PATH, so set the full path in
// the dialog there.
var ASTROSWIN_DEFAULT_EXECUTABLE = "astroswin";
var ASTROSWIN_DEFAULT_MODEL = "small";
var ASTROSWIN_DEVICES = ["auto", "cpu", "cuda", "mps"];
var ASTROSWIN_OUTPUT_REPLACE = "replace";
var ASTROSWIN_OUTPUT_NEW_WINDOW = "newWindow";
var ASTROSWIN_POLL_MS = 250;

// Counter part of the temporary folder names (see astroswinTempPaths).
var astroswinRunCounter = 0;

// ----------------------------------------------------------------------------
// Parameters
// ----------------------------------------------------------------------------

function AstroSWINParameters()
{
   this.strength = 1.0;
   this.model = ASTROSWIN_DEFAULT_MODEL;
   this.device = "auto";
   this.outputMode = ASTROSWIN_OUTPUT_REPLACE;
   this.executable = ASTROSWIN_DEFAULT_EXECUTABLE;
}

AstroSWINParameters.prototype.load = function()
{
   var v;
   v = Settings.read(ASTROSWIN_SETTINGS_PREFIX + "strength", DataType_Double);
   if (Settings.lastReadOK && typeof v === "number" && isFinite(v))
      this.strength = Math.min(1, Math.max(0, v));
   v = Settings.read(ASTROSWIN_SETTINGS_PREFIX + "model", DataType_String);
   if (Settings.lastReadOK && typeof v === "string" && v.trim().length > 0)
      this.model = v.trim();
   v = Settings.read(ASTROSWIN_SETTINGS_PREFIX + "device", DataType_String);
   if (Settings.lastReadOK && ASTROSWIN_DEVICES.indexOf(v) >= 0)
      this.device = v;
   v = Settings.read(ASTROSWIN_SETTINGS_PREFIX + "outputMode", DataType_String);
   if (Settings.lastReadOK && (v === ASTROSWIN_OUTPUT_REPLACE || v === ASTROSWIN_OUTPUT_NEW_WINDOW))
      this.outputMode = v;
   v = Settings.read(ASTROSWIN_SETTINGS_PREFIX + "executable", DataType_String);
   if (Settings.lastReadOK && typeof v === "string" && v.trim().length > 0)
      this.executable = v.trim();
};

AstroSWINParameters.prototype.save = function()
{
   Settings.write(ASTROSWIN_SETTINGS_PREFIX + "strength", DataType_Double, this.strength);
   Settings.write(ASTROSWIN_SETTINGS_PREFIX + "model", DataType_String, this.model);
   Settings.write(ASTROSWIN_SETTINGS_PREFIX + "device", DataType_String, this.device);
   Settings.write(ASTROSWIN_SETTINGS_PREFIX + "outputMode", DataType_String, this.outputMode);
   Settings.write(ASTROSWIN_SETTINGS_PREFIX + "executable", DataType_String, this.executable);
};

// Cleans user input: strength clamped to [0, 1] and rounded to 3 decimals,
// blank fields back to their defaults, surrounding quotes removed from the
// executable path (Windows "Copy as path" adds them).
function astroswinNormalizeParams(params)
{
   var p = new AstroSWINParameters();
   if (params)
   {
      var s = Number(params.strength);
      if (isFinite(s))
         p.strength = Math.round(Math.min(1, Math.max(0, s)) * 1000) / 1000;
      if (typeof params.model === "string" && params.model.trim().length > 0)
         p.model = params.model.trim();
      if (ASTROSWIN_DEVICES.indexOf(params.device) >= 0)
         p.device = params.device;
      if (params.outputMode === ASTROSWIN_OUTPUT_NEW_WINDOW)
         p.outputMode = ASTROSWIN_OUTPUT_NEW_WINDOW;
      if (typeof params.executable === "string")
      {
         var exe = params.executable.trim();
         if (exe.length >= 2 && exe.charAt(0) === "\"" && exe.charAt(exe.length - 1) === "\"")
            exe = exe.substring(1, exe.length - 1).trim();
         if (exe.length > 0)
            p.executable = exe;
      }
   }
   return p;
}

// ----------------------------------------------------------------------------
// Engine invocation helpers
// ----------------------------------------------------------------------------

// Unique temporary paths for one run: a folder of its own in the system
// temporary folder, named from the time in ms + a random number + a counter
// (two runs, even in the same millisecond, never collide), holding the
// engine's input and output. Names only: see astroswinCreateRunFolder.
function astroswinTempPaths()
{
   astroswinRunCounter += 1;
   var dir = File.systemTempDirectory;
   while (dir.length > 1 && (dir.charAt(dir.length - 1) === "/" || dir.charAt(dir.length - 1) === "\\"))
      dir = dir.substring(0, dir.length - 1);
   var folder = dir + "/AstroSWIN_" + Date.now() + "_" +
                Math.floor(Math.random() * 1.0e9) + "_" + astroswinRunCounter;
   return { folder: folder, input: folder + "/AstroSWIN_in.xisf", output: folder + "/AstroSWIN_out.xisf" };
}

// Creates this run's temporary folder and returns its paths (see astroswinTempPaths).
// A name already in use (another PixInsight instance) is skipped for the next one.
function astroswinCreateRunFolder()
{
   var lastError = "";
   for (var attempt = 0; attempt < 5; ++attempt)
   {
      var paths = astroswinTempPaths();
      if (File.directoryExists(paths.folder) || File.exists(paths.folder))
         continue;
      try
      {
         File.createDirectory(paths.folder, true);
         return paths;
      }
      catch (x)
      {
         lastError = x && x.message ? String(x.message) : String(x);
      }
   }
   throw new AstroSWINFailure("Could not create a temporary folder in " + File.systemTempDirectory +
                              (lastError.length > 0 ? " (" + lastError + ")" : "") + ".");
}

// The engine's argument list. Each element is passed to the program as one
// argument; no command line string is ever built (spaces in paths are safe).
function astroswinBuildArgs(inPath, outPath, params)
{
   return [ "restore", inPath,
            "-o", outPath,
            "--progress", "json",
            "--overwrite",
            "--strength", String(params.strength),
            "--model", params.model,
            "--device", params.device ];
}

// Human readable command line, for the Console only (never executed).
function astroswinDisplayCommand(program, args)
{
   var parts = [ program ].concat(args);
   for (var i = 0; i < parts.length; ++i)
      if (parts[i].length === 0 || /[\s"']/.test(parts[i]))
         parts[i] = "\"" + parts[i] + "\"";
   return parts.join(" ");
}

function astroswinToText(data)
{
   if (data === null || data === undefined)
      return "";
   return String(data);
}

// Splits a stream into lines across arbitrary chunk boundaries.
function AstroSWINLineBuffer(onLine)
{
   this.pending = "";
   this.onLine = onLine;
}

AstroSWINLineBuffer.prototype.push = function(text)
{
   if (text.length === 0)
      return;
   this.pending += text;
   var nl;
   while ((nl = this.pending.indexOf("\n")) >= 0)
   {
      var line = this.pending.substring(0, nl);
      this.pending = this.pending.substring(nl + 1);
      this.onLine(line.replace(/\r$/, ""));
   }
};

AstroSWINLineBuffer.prototype.flush = function()
{
   if (this.pending.length > 0)
   {
      var line = this.pending;
      this.pending = "";
      this.onLine(line.replace(/\r$/, ""));
   }
};

// Interprets the engine's "--progress json" stdout: one JSON object per line.
// Anything else (log lines, blank lines, malformed JSON) is ignored.
function AstroSWINProgress()
{
   this.errorMessage = "";
   this.summary = null;
   this.doneSeen = false;
   this.lastStep = 0;   // first report at 5%
}

AstroSWINProgress.prototype.handleLine = function(line)
{
   var text = line.trim();
   if (text.length === 0 || text.charAt(0) !== "{")
      return;
   var ev;
   try
   {
      ev = JSON.parse(text);
   }
   catch (x)
   {
      return;
   }
   if (ev === null || typeof ev !== "object" || typeof ev.event !== "string")
      return;

   if (ev.event === "start")
   {
      console.writeln("AstroSWIN: processing " + ev.width + " x " + ev.height + " px, " +
                      ev.channels + " channel(s), " + ev.tiles + " tile(s)");
   }
   else if (ev.event === "progress")
   {
      var f = Number(ev.fraction);
      if (!isFinite(f) && Number(ev.total) > 0)
         f = Number(ev.done) / Number(ev.total);
      if (!isFinite(f))
         return;
      f = Math.min(1, Math.max(0, f));
      // The Console scrolls: report every 5% rather than every tile.
      var step = Math.floor(f * 20 + 1.0e-9);
      if (step > this.lastStep)
      {
         this.lastStep = step;
         var tiles = (ev.done !== undefined && ev.total !== undefined) ?
                     " (" + ev.done + "/" + ev.total + " tiles)" : "";
         console.writeln("AstroSWIN: " + Math.round(f * 100) + "%" + tiles);
      }
   }
   else if (ev.event === "done")
   {
      this.doneSeen = true;
      var secs = Number(ev.seconds);
      console.writeln("AstroSWIN: engine finished" +
                      (isFinite(secs) ? " in " + secs.toFixed(1) + " s" : ""));
   }
   else if (ev.event === "error")
   {
      this.errorMessage = (typeof ev.message === "string" && ev.message.length > 0) ?
                          ev.message : "unknown engine error";
   }
   else if (ev.event === "warning")
   {
      if (typeof ev.message === "string")
         console.warningln("AstroSWIN: " + ev.message);
   }
   else if (ev.event === "summary")
   {
      this.summary = { ok: Number(ev.ok), failed: Number(ev.failed) };
   }
};

// The line to show when the engine fails: the "error" event's message, else
// the engine's "astroswin: error: ..." stderr line, else the last non-empty
// stderr line (e.g. the last line of a Python traceback).
function astroswinErrorLine(progress, stderrLines)
{
   if (progress.errorMessage.length > 0)
      return progress.errorMessage;
   var i;
   for (i = stderrLines.length - 1; i >= 0; --i)
      if (stderrLines[i].indexOf("astroswin: error:") === 0)
         return stderrLines[i];
   for (i = stderrLines.length - 1; i >= 0; --i)
      if (stderrLines[i].trim().length > 0)
         return stderrLines[i].trim();
   return "";
}

// Stop a running engine: terminate() first (SIGTERM on Linux and macOS, which the
// engine handles like Ctrl-C: it removes the temporary file it may be writing next
// to the output and exits), kill() after a grace period (Windows console programs
// never see terminate()). Waits, so its files are released before we delete them.
function astroswinStopProcess(proc)
{
   if (proc.isRunning === false)   // a finished process: nothing to stop
      return;
   if (typeof proc.terminate === "function")
   {
      proc.terminate();
      if (proc.waitForFinished(3000))
         return;
   }
   proc.kill();
   proc.waitForFinished(5000);
}

// Removes a run's temporary folder whole: every file in it (the engine's input
// and output, and anything else found there, such as the temporary file a killed
// engine leaves next to its output), any subfolder the same way, then the folder.
// Call it only once the engine has stopped. Never throws: a failure is a Console
// warning naming what was left behind. Returns true when the folder is gone.
function astroswinRemoveFolder(folder)
{
   var files = [];
   var folders = [];
   var find = null;
   try
   {
      if (!folder || !File.directoryExists(folder))
         return true;
      // Collect first, remove afterwards: never change a folder while listing it.
      find = new FileFind;
      if (find.begin(folder + "/*"))
         do
         {
            var name = find.name;
            if (name === "." || name === "..")
               continue;
            if (find.isDirectory)
               folders.push(folder + "/" + name);
            else
               files.push(folder + "/" + name);
         }
         while (find.next());
   }
   catch (x)
   {
      console.warningln("AstroSWIN: could not list the temporary folder " + folder + ": " +
                        (x && x.message ? x.message : String(x)));
   }
   finally
   {
      try
      {
         if (find !== null)
            find.end();
      }
      catch (x2)
      {
      }
   }
   var i;
   for (i = 0; i < files.length; ++i)
   {
      try
      {
         File.remove(files[i]);
      }
      catch (x3)
      {
         console.warningln("AstroSWIN: could not remove temporary file " + files[i] + ": " +
                           (x3 && x3.message ? x3.message : String(x3)));
      }
   }
   for (i = 0; i < folders.length; ++i)
      astroswinRemoveFolder(folders[i]);
   try
   {
      File.removeDirectory(folder);
      return true;
   }
   catch (x4)
   {
      console.warningln("AstroSWIN: could not remove the temporary folder " + folder + " (remove it by hand): " +
                        (x4 && x4.message ? x4.message : String(x4)));
      return false;
   }
}

function astroswinHtml(text)
{
   return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// Fills a (new, hidden) window's main view with a copy of an image.
function astroswinFillWindow(window, image)
{
   window.mainView.beginProcess(UndoFlag_NoSwapFile);
   try
   {
      window.mainView.image.assign(image);
   }
   finally
   {
      window.mainView.endProcess();
   }
}

// The engine's ASWSCALE keyword in a result window (1 when absent or unreadable).
function astroswinStoredScale(window)
{
   var keywords = window.keywords;
   for (var i = 0; i < keywords.length; ++i)
      if (keywords[i].name === "ASWSCALE")
      {
         var value = parseFloat(String(keywords[i].value).replace(/'/g, ""));
         return (isFinite(value) && value > 0) ? value : 1;
      }
   return 1;
}

function astroswinClose(window)
{
   try
   {
      window.forceClose();
   }
   catch (x)
   {
      console.warningln("AstroSWIN: could not close a temporary window: " + x.message);
   }
}

function astroswinIsPathLike(program)
{
   return program.indexOf("/") >= 0 || program.indexOf("\\") >= 0;
}

// A failure we report in plain words (as opposed to an unexpected exception).
function AstroSWINFailure(message)
{
   this.message = message;
}

// ----------------------------------------------------------------------------
// The engine run: testable, independent of the dialog.
//
// targetWindow: the ImageWindow to process (its current view is the target).
// params:       AstroSWINParameters (or a plain object with the same fields).
// ui:           optional { showMessages: bool (default true),
//                          cancelRequested: function () -> bool,
//                          pollMs: number }.
// Returns { ok, aborted, message, window (new-window mode), inputPath, outputPath,
//           tempFolder } (the paths are gone again when it returns).
//
// Sample format choice in replace mode: View.image.assign() converts the
// result into the target's own sample format, so an 8/16/32-bit integer
// target keeps its format (and the result is quantized to it). A warning is
// printed; use the new-window mode to keep the full 32-bit float result.
// ----------------------------------------------------------------------------

function runAstroSWIN(targetWindow, params, ui)
{
   ui = ui || {};
   var showMessages = ui.showMessages !== false;
   var pollMs = (typeof ui.pollMs === "number" && ui.pollMs > 0) ? ui.pollMs : ASTROSWIN_POLL_MS;
   var p = astroswinNormalizeParams(params);
   var result = { ok: false, aborted: false, message: "", window: null,
                  inputPath: "", outputPath: "", tempFolder: "" };

   var paths = null;
   var clone = null;
   var resultWindow = null;
   var newWindow = null;
   var proc = null;
   var abortWasEnabled = false;

   function report(message)
   {
      result.message = message;
      console.criticalln("*** AstroSWIN: " + message);
      if (showMessages)
         (new MessageBox("<p>" + astroswinHtml(message) + "</p>", ASTROSWIN_TITLE,
                         StdIcon_Error, StdButton_Ok)).execute();
   }

   // Stops the engine if it still runs (terminate, then kill), once.
   function stopEngine()
   {
      if (proc === null)
         return;
      var running = proc;
      proc = null;
      try
      {
         astroswinStopProcess(running);
      }
      catch (x)
      {
         console.warningln("AstroSWIN: could not stop the engine: " + (x && x.message ? x.message : String(x)));
      }
   }

   function cancelRequested()
   {
      if (console.abortRequested)
         return true;
      return (typeof ui.cancelRequested === "function") && ui.cancelRequested() === true;
   }

   try
   {
      if (!targetWindow || targetWindow.isNull)
         throw new AstroSWINFailure("There is no image window to process.");
      var view = targetWindow.currentView;
      if (!view || view.isNull)
         view = targetWindow.mainView;
      var image = view.image;
      if (image.numberOfChannels !== (image.isColor ? 3 : 1))
         throw new AstroSWINFailure("AstroSWIN restores mono and RGB images; this one has " +
            image.numberOfChannels + " channels (an alpha channel?). Remove the extra channels " +
            "(e.g. with ChannelExtraction) and run it again.");
      // Replace mode writes every pixel; it cannot yet blend through a mask the way
      // PixInsight's processes do. Refuse before the engine runs, not after.
      if (p.outputMode !== ASTROSWIN_OUTPUT_NEW_WINDOW && targetWindow.maskEnabled &&
          !targetWindow.mask.isNull)
         throw new AstroSWINFailure("A mask (" + targetWindow.mask.mainView.id + ") is active on " +
            "this image, and AstroSWIN would replace every pixel regardless of it. Disable the " +
            "mask, or use the new-window mode and blend the result through your mask with PixelMath.");

      if (astroswinIsPathLike(p.executable) && !File.exists(p.executable) &&
          !File.exists(p.executable + ".exe"))
         throw new AstroSWINFailure("The AstroSWIN executable was not found: " + p.executable +
                                    ". Set the path to the astroswin executable in the dialog.");

      paths = astroswinCreateRunFolder();
      result.tempFolder = paths.folder;
      result.inputPath = paths.input;
      result.outputPath = paths.output;

      // 1. Hand the image over through a hidden 32-bit float copy.
      clone = new ImageWindow(image.width, image.height, image.numberOfChannels,
                              32, true, image.isColor, "AstroSWIN_input");
      astroswinFillWindow(clone, image);
      clone.keywords = targetWindow.keywords;
      var saved = clone.saveAs(paths.input, false, false, true, false);
      clone.forceClose();
      clone = null;
      if (!saved || !File.exists(paths.input))
         throw new AstroSWINFailure("Could not write the temporary input file " + paths.input);

      // 2. Run the engine (argument array, never a command string).
      var args = astroswinBuildArgs(paths.input, paths.output, p);
      console.writeln("AstroSWIN " + ASTROSWIN_VERSION + ": " + astroswinDisplayCommand(p.executable, args));
      var startError = "";
      var started = false;
      proc = new ExternalProcess;
      try
      {
         proc.start(p.executable, args);
         started = proc.waitForStarted();
      }
      catch (x)
      {
         startError = x.message ? String(x.message) : String(x);
      }
      if (!started)
      {
         proc = null;
         throw new AstroSWINFailure("Could not start the AstroSWIN engine \"" + p.executable + "\"" +
            (startError.length > 0 ? " (" + startError + ")" : "") +
            ". Check that AstroSWIN is installed and set the path to the astroswin executable" +
            " in the dialog (on Windows: astroswin.exe in the Scripts folder of the Python" +
            " environment where AstroSWIN is installed).");
      }

      // 3. Poll: keep PixInsight responsive, show progress, allow abort.
      var progress = new AstroSWINProgress();
      var stderrLines = [];
      var outBuf = new AstroSWINLineBuffer(function(line) { progress.handleLine(line); });
      var errBuf = new AstroSWINLineBuffer(function(line)
      {
         stderrLines.push(line);
         if (line.trim().length > 0)
            console.warningln("astroswin: " + line);
      });
      var pump = function()
      {
         outBuf.push(astroswinToText(proc.stdout));
         errBuf.push(astroswinToText(proc.stderr));
      };

      abortWasEnabled = console.abortEnabled;
      console.abortEnabled = true;
      var aborted = false;
      while (!proc.waitForFinished(pollMs))
      {
         processEvents();
         pump();
         if (cancelRequested())
         {
            aborted = true;
            astroswinStopProcess(proc);
            break;
         }
      }
      pump();
      outBuf.flush();
      errBuf.flush();
      if (!aborted && cancelRequested())
         aborted = true;   // abort pressed while the engine was finishing: honour it
      var exitStatus = Number(proc.exitStatus || 0);   // 0: normal exit, else crashed
      var code = Number(proc.exitCode);
      proc = null;

      if (aborted)
      {
         result.aborted = true;
         result.message = "Aborted by the user; the image was not changed.";
         console.warningln("AstroSWIN: " + result.message);
         return result;
      }

      // 4. Exit status and code.
      if (exitStatus !== 0 || code !== 0 || progress.errorMessage.length > 0 ||
          (progress.summary !== null && progress.summary.failed > 0))
      {
         var line = astroswinErrorLine(progress, stderrLines);
         var how = (exitStatus !== 0) ? "the engine crashed" : "engine exit code " + code;
         throw new AstroSWINFailure("The engine failed: " +
            (line.length > 0 ? line : "no error message") + " (" + how + "). Nothing was applied.");
      }
      if (!File.exists(paths.output))
         throw new AstroSWINFailure("The engine reported success but wrote no output file (" + paths.output + ").");

      // 5. Read the result back.
      var opened = ImageWindow.open(paths.output, "", "", true);
      if (!opened || opened.length < 1 || !opened[0] || opened[0].isNull)
         throw new AstroSWINFailure("Could not open the engine's output " + paths.output);
      resultWindow = opened[0];
      for (var k = 1; k < opened.length; ++k)
         astroswinClose(opened[k]);
      var out = resultWindow.mainView.image;
      // The engine keeps float XISF within [0, 1]: an input with values above 1 comes back
      // divided by ASWSCALE (original = stored * ASWSCALE). Undo that, or the image dims.
      var scale = astroswinStoredScale(resultWindow);
      if (scale !== 1)
      {
         resultWindow.mainView.beginProcess(UndoFlag_NoSwapFile);
         try
         {
            out.apply(scale, ImageOp_Mul);
         }
         finally
         {
            resultWindow.mainView.endProcess();
         }
      }
      if (out.width !== image.width || out.height !== image.height ||
          out.numberOfChannels !== image.numberOfChannels)
         throw new AstroSWINFailure("The engine's output has the wrong geometry (" + out.width + " x " +
            out.height + " x " + out.numberOfChannels + ", expected " + image.width + " x " +
            image.height + " x " + image.numberOfChannels + "); nothing was applied.");

      if (p.outputMode === ASTROSWIN_OUTPUT_NEW_WINDOW)
      {
         var nw = new ImageWindow(image.width, image.height, image.numberOfChannels,
                                  32, true, image.isColor, view.id + "_astroswin");
         newWindow = nw;   // closed again in finally unless we get to show() it
         astroswinFillWindow(nw, out);
         nw.keywords = targetWindow.keywords;
         // The solution describes the main image: only valid for a same-size copy.
         if (view.isMainView && targetWindow.hasAstrometricSolution)
            nw.copyAstrometricSolution(targetWindow);
         nw.show();
         newWindow = null;
         result.window = nw;
         console.writeln("AstroSWIN: result in new window " + nw.mainView.id);
      }
      else
      {
         if (!(image.isReal && image.bitsPerSample === 32))
            console.warningln("AstroSWIN: the target is " + image.bitsPerSample + "-bit " +
               (image.isReal ? "float" : "integer") + "; the result is converted to that format." +
               " Use the new-window mode to keep a 32-bit float result.");
         view.beginProcess(UndoFlag_PixelData);
         try
         {
            view.image.assign(out);
         }
         finally
         {
            view.endProcess();
         }
         console.writeln("AstroSWIN: " + view.id + " restored (undo with Ctrl+Z)");
      }
      result.ok = true;
      result.message = "ok";
      return result;
   }
   catch (x)
   {
      // Stop the engine before anything else: a modal message box would leave it
      // running (and holding its files) until the user closes the box.
      stopEngine();
      if (x instanceof AstroSWINFailure)
         report(x.message);
      else
         report("Unexpected error: " + (x && x.message ? x.message : String(x)));
      return result;
   }
   finally
   {
      stopEngine();
      if (clone !== null)
         astroswinClose(clone);
      if (newWindow !== null)
         astroswinClose(newWindow);
      if (resultWindow !== null)
         astroswinClose(resultWindow);
      if (paths !== null)
         astroswinRemoveFolder(paths.folder);
      console.abortEnabled = abortWasEnabled;
   }
}

// ----------------------------------------------------------------------------
// Dialog
// ----------------------------------------------------------------------------

function AstroSWINDialog(params)
{
   this.__base__ = Dialog;
   this.__base__();

   var self = this;
   this.params = params;
   this.windowTitle = ASTROSWIN_TITLE + " " + ASTROSWIN_VERSION;

   var labelWidth = 90;

   this.helpLabel = new Label(this);
   this.helpLabel.wordWrapping = true;
   this.helpLabel.useRichText = true;
   this.helpLabel.text = "<b>AstroSWIN " + ASTROSWIN_VERSION + "</b> &mdash; learned deconvolution " +
      "and denoising for <i>linear</i> images. Runs the external <i>astroswin</i> engine on a copy " +
      "of the active view.";

   // Strength
   this.strengthControl = new NumericControl(this);
   this.strengthControl.label.text = "Strength:";
   this.strengthControl.label.minWidth = labelWidth;
   this.strengthControl.setRange(0, 1);
   this.strengthControl.slider.setRange(0, 100);
   this.strengthControl.setPrecision(2);
   this.strengthControl.setValue(params.strength);
   this.strengthControl.toolTip = "<p>0 leaves the image unchanged, 1 applies the full restoration.</p>";
   this.strengthControl.onValueUpdated = function(value)
   {
      self.params.strength = value;
   };

   // Model
   this.modelLabel = new Label(this);
   this.modelLabel.text = "Model:";
   this.modelLabel.minWidth = labelWidth;
   this.modelEdit = new Edit(this);
   this.modelEdit.text = params.model;
   this.modelEdit.toolTip = "<p>Model name or path to a model folder (default: small).</p>";
   this.modelEdit.onTextUpdated = function(text)
   {
      self.params.model = text;
   };
   this.modelSizer = new HorizontalSizer;
   this.modelSizer.spacing = 4;
   this.modelSizer.add(this.modelLabel);
   this.modelSizer.add(this.modelEdit, 100);

   // Device
   this.deviceLabel = new Label(this);
   this.deviceLabel.text = "Device:";
   this.deviceLabel.minWidth = labelWidth;
   this.deviceCombo = new ComboBox(this);
   for (var i = 0; i < ASTROSWIN_DEVICES.length; ++i)
      this.deviceCombo.addItem(ASTROSWIN_DEVICES[i]);
   this.deviceCombo.currentItem = Math.max(0, ASTROSWIN_DEVICES.indexOf(params.device));
   this.deviceCombo.toolTip = "<p>auto picks a GPU when one is usable, else the CPU.</p>";
   this.deviceCombo.onItemSelected = function(index)
   {
      self.params.device = ASTROSWIN_DEVICES[index];
   };
   this.deviceSizer = new HorizontalSizer;
   this.deviceSizer.spacing = 4;
   this.deviceSizer.add(this.deviceLabel);
   this.deviceSizer.add(this.deviceCombo);
   this.deviceSizer.addStretch();

   // Output mode
   this.replaceRadio = new RadioButton(this);
   this.replaceRadio.text = "Replace the target image (undoable)";
   this.replaceRadio.checked = params.outputMode !== ASTROSWIN_OUTPUT_NEW_WINDOW;
   this.replaceRadio.onCheck = function(checked)
   {
      if (checked)
         self.params.outputMode = ASTROSWIN_OUTPUT_REPLACE;
   };
   this.newWindowRadio = new RadioButton(this);
   this.newWindowRadio.text = "Create a new 32-bit float window";
   this.newWindowRadio.checked = params.outputMode === ASTROSWIN_OUTPUT_NEW_WINDOW;
   this.newWindowRadio.onCheck = function(checked)
   {
      if (checked)
         self.params.outputMode = ASTROSWIN_OUTPUT_NEW_WINDOW;
   };
   this.outputGroup = new GroupBox(this);
   this.outputGroup.title = "Output";
   this.outputGroup.sizer = new VerticalSizer;
   this.outputGroup.sizer.margin = 6;
   this.outputGroup.sizer.spacing = 4;
   this.outputGroup.sizer.add(this.replaceRadio);
   this.outputGroup.sizer.add(this.newWindowRadio);

   // Engine executable
   this.exeLabel = new Label(this);
   this.exeLabel.text = "Engine:";
   this.exeLabel.minWidth = labelWidth;
   this.exeEdit = new Edit(this);
   this.exeEdit.text = params.executable;
   this.exeEdit.toolTip = "<p>The astroswin executable. \"astroswin\" is looked up on the PATH; " +
      "on Windows give the full path to astroswin.exe in the Scripts folder of the Python " +
      "environment where AstroSWIN is installed.</p>";
   this.exeEdit.onTextUpdated = function(text)
   {
      self.params.executable = text;
   };
   this.exeBrowse = new PushButton(this);
   this.exeBrowse.text = "Browse...";
   this.exeBrowse.onClick = function()
   {
      var fd = new OpenFileDialog;
      fd.caption = "Select the astroswin executable";
      fd.multipleSelections = false;
      if (fd.execute())
      {
         self.exeEdit.text = fd.fileName;
         self.params.executable = fd.fileName;
      }
   };
   this.exeSizer = new HorizontalSizer;
   this.exeSizer.spacing = 4;
   this.exeSizer.add(this.exeLabel);
   this.exeSizer.add(this.exeEdit, 100);
   this.exeSizer.add(this.exeBrowse);

   // Buttons
   this.okButton = new PushButton(this);
   this.okButton.text = "OK";
   this.okButton.onClick = function()
   {
      var p = astroswinNormalizeParams(self.params);
      self.params.strength = p.strength;
      self.params.model = p.model;
      self.params.device = p.device;
      self.params.outputMode = p.outputMode;
      self.params.executable = p.executable;
      self.ok();
   };
   this.cancelButton = new PushButton(this);
   this.cancelButton.text = "Cancel";
   this.cancelButton.onClick = function()
   {
      self.cancel();
   };
   this.buttonSizer = new HorizontalSizer;
   this.buttonSizer.spacing = 6;
   this.buttonSizer.addStretch();
   this.buttonSizer.add(this.okButton);
   this.buttonSizer.add(this.cancelButton);

   this.sizer = new VerticalSizer;
   this.sizer.margin = 8;
   this.sizer.spacing = 6;
   this.sizer.add(this.helpLabel);
   this.sizer.add(this.strengthControl);
   this.sizer.add(this.modelSizer);
   this.sizer.add(this.deviceSizer);
   this.sizer.add(this.outputGroup);
   this.sizer.add(this.exeSizer);
   this.sizer.add(this.buttonSizer);

   this.adjustToContents();
}

AstroSWINDialog.prototype = new Dialog;

// ----------------------------------------------------------------------------
// Entry point
// ----------------------------------------------------------------------------

function main()
{
   console.show();
   var target = ImageWindow.activeWindow;
   if (!target || target.isNull)
   {
      (new MessageBox("<p>Open an image first: AstroSWIN processes the active image.</p>",
                      ASTROSWIN_TITLE, StdIcon_Warning, StdButton_Ok)).execute();
      return;
   }
   var params = new AstroSWINParameters();
   params.load();
   var dialog = new AstroSWINDialog(params);
   if (!dialog.execute())
      return;
   params.save();
   runAstroSWIN(target, params, { showMessages: true });
}

if (typeof __ASTROSWIN_TEST__ === "undefined")
   main();
