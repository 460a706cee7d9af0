// The copy button of a value shown once (docs/console.md#shown-once). Without this script the value is still in a
// read-only field to select and copy by hand; the button stays hidden, so no control does nothing.
"use strict";
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var field = document.getElementById(button.getAttribute("data-copy"));
  var status = button.parentElement.querySelector(".copied");
  if (!field) {
    return;
  }
  function done(text) {
    if (status) {
      status.textContent = text;
    }
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    field.focus();
    field.select();
    // The asynchronous clipboard needs a secure context (https, or this machine); elsewhere the older command works.
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(
        function () { done("Copied."); },
        function () { done(document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy."); }
      );
    } else {
      done(document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy.");
    }
  });
});
