// Set-up for pages that embed Jupyter widgets. myst-nb loads it on widget pages only,
// after require.js and before the widget manager (nb_ipywidgets_js in _config.yml).
(function () {
  "use strict";

  // 1. The theme's FontAwesome watches the DOM and swaps every <i class="fa ..."> for an
  // <svg>. The Play widget keeps a handle on its <i> icon and throws when it is gone,
  // which breaks the Play -> slider -> Stack link chain. Icons already on the page are
  // still converted once at load; only the mutation observer is switched off.
  window.FontAwesomeConfig = Object.assign({}, window.FontAwesomeConfig, {
    observeMutations: false,
  });

  // 2. The widget manager computes where its fonts are from the URL require.js gives
  // each bundled module, by default relative to the page (chapters/@jupyter-widgets/...,
  // a 404). Map every module embed-amd.js defines into the local copy of its dist/
  // folder, found from this script's own URL so that pages at any depth work. The
  // modules are defined inline, so these URLs are never fetched; only their folder counts.
  var staticRoot = document.currentScript.src.replace(/[^/]*$/, "");
  var dist = staticRoot + "jupyter-widgets/html-manager/dist/";
  var bundled = ["base", "base7", "controls", "controls7", "html-manager",
                 "html-manager/dist/libembed-amd"];
  var paths = {};
  bundled.forEach(function (name) {
    paths["@jupyter-widgets/" + name] = dist + name.replace(/\//g, "-");
  });
  window.require.config({ paths: paths });

  // 3. The widget manager typesets widget labels with the MathJax 2 API
  // (MathJax.Hub.Queue); Sphinx loads MathJax 3, which has no Hub, so every widget with
  // a description threw "Cannot read properties of undefined (reading 'Queue')".
  // Translate the one call it makes. MathJax is loaded with `defer`, so it is there by
  // DOMContentLoaded; the manager renders widgets on `load`, after this listener.
  function typesetLater(mathjax, element) {
    mathjax.startup.promise.then(function () {
      return mathjax.typesetPromise(element ? [element] : undefined);
    });
  }
  function addMathJax2Hub() {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.typesetPromise || !mathjax.startup) {
      return;
    }
    mathjax.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (job) {
          if (Array.isArray(job) && job[0] === "Typeset") {
            typesetLater(mathjax, job[2]);
          }
        });
      },
    };
  }
  document.addEventListener("DOMContentLoaded", addMathJax2Hub);
  window.addEventListener("load", addMathJax2Hub);

  // 4. The Play widget's buttons are icons, and the slider's handle has no name of its
  // own: give the steppers' controls accessible names (and tooltips) once they render.
  var PLAY_BUTTONS = ["Play", "Pause", "Stop", "Repeat"];
  function nameControls(root) {
    root.querySelectorAll(".lb-play").forEach(function (play) {
      play.querySelectorAll("button").forEach(function (button, i) {
        var name = PLAY_BUTTONS[i] || "Play control";
        if (!button.hasAttribute("aria-label")) {
          button.setAttribute("aria-label", name);
          button.setAttribute("title", name);
        }
      });
    });
    root.querySelectorAll(".lb-slider [role=slider], .lb-slider .noUi-handle")
      .forEach(function (handle) {
        if (!handle.hasAttribute("aria-label")) {
          handle.setAttribute("aria-label", "step (arrow keys, Home, End)");
        }
      });
  }
  document.addEventListener("DOMContentLoaded", function () {
    new MutationObserver(function () { nameControls(document); })
      .observe(document.body, { childList: true, subtree: true });
  });
})();
