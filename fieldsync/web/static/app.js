// Progressive help for the web app: everything works without this file.
// No inline script anywhere (the CSP forbids it); no third-party code.
"use strict";
(function () {
  var exit = document.getElementById("quick-exit");
  if (exit) {
    // Leave without a history entry to come back to.
    exit.addEventListener("click", function (event) {
      event.preventDefault();
      window.location.replace(exit.href);
    });
  }
  var locate = document.getElementById("locate");
  var status = document.getElementById("locate-status");
  if (locate && status && "geolocation" in navigator) {
    locate.hidden = false;
    locate.addEventListener("click", function () {
      status.textContent = locate.dataset.busy;
      navigator.geolocation.getCurrentPosition(
        function (position) {
          var c = position.coords;
          document.getElementById("lat").value = c.latitude.toFixed(6);
          document.getElementById("lon").value = c.longitude.toFixed(6);
          document.getElementById("accuracy").value = Math.round(c.accuracy);
          status.textContent = locate.dataset.found;
        },
        function () {
          status.textContent = locate.dataset.failed;
        },
        { enableHighAccuracy: true, timeout: 30000, maximumAge: 60000 }
      );
    });
  }
  var form = document.getElementById("report-form");
  var send = document.getElementById("send");
  if (form && send) {
    form.addEventListener("submit", function () {
      // One submission at a time; the page that comes back enables it again.
      window.setTimeout(function () {
        send.disabled = true;
        send.textContent = send.dataset.busy;
      }, 0);
    });
  }
})();
