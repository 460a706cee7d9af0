// The console's upload form with a progress bar (docs/console.md#import-by-upload). Without this script the form
// posts as it is and the server answers a page with the counts; with it, the file goes by XMLHttpRequest, whose
// upload progress is shown (the server imports while it reads, so the bar also follows the import), and the counts
// are written into the form's status line. Text only (textContent): nothing the server says is read as HTML.
"use strict";
document.querySelectorAll("form[data-upload]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    var input = form.querySelector("input[type=file]");
    if (!input.files.length) { return; }
    event.preventDefault();
    var bar = form.querySelector("[data-upload-progress]");
    var status = form.querySelector("[data-upload-status]");
    var errors = form.querySelector("[data-upload-errors]");
    var button = form.querySelector("button[type=submit]");
    var xhr = new XMLHttpRequest();
    function say(text, failed) {
      status.textContent = text;
      status.className = failed ? "message error" : "message done";
    }
    errors.textContent = "";
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    say("Uploading…", false);
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.responseType = "json";
    xhr.upload.onprogress = function (progress) {
      if (progress.lengthComputable) {
        bar.value = Math.floor(100 * progress.loaded / progress.total);
        say("Uploading and importing… " + bar.value + "%", false);
      }
    };
    xhr.upload.onload = function () { say("Importing the last codes…", false); };
    xhr.onload = function () {
      button.disabled = false;
      var answer = xhr.response || {};
      if (xhr.status !== 200) {
        say("Refused: " + (answer.error || ("HTTP " + xhr.status)) + " Nothing more was imported.", true);
        return;
      }
      bar.value = 100;
      ["inserted", "duplicated", "invalid", "discarded_by_limit", "lines"].forEach(function (name) {
        status.dataset[name] = String(answer[name]);
      });
      say("Inserted " + answer.inserted + ", duplicated " + answer.duplicated + ", invalid " + answer.invalid +
        (answer.discarded_by_limit ? ", over the limit " + answer.discarded_by_limit : "") + "." +
        (answer.stopped ? " The import stopped: " + answer.stopped +
          ". Uploading the whole file again is safe." : ""), Boolean(answer.stopped));
      (answer.errors || []).forEach(function (text) {
        var item = document.createElement("li");
        item.textContent = text;
        errors.appendChild(item);
      });
    };
    xhr.onerror = function () {
      button.disabled = false;
      say("The upload failed: the connection was lost. Codes imported before that stay; uploading the whole " +
        "file again is safe (those come back as duplicated).", true);
    };
    xhr.send(new FormData(form));
  });
});
