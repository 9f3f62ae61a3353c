// The security console's progressive touches; every page works without them.
// - <time data-local>: shown in the viewer's zone (UTC stays in the title, on hover).
// - [data-exp]: a live countdown to that Unix time.
// - #filter-live: filters the table rows as you type.
// - #grants[data-live]: the Now page follows the broker: on each `grants` event of the
//   server-sent stream, the page is fetched again and its table swapped in, unless a revoke
//   form is being filled in (then the swap waits for the next event).
(function () {
  'use strict';
  // The viewer's zone and their locale's way of writing a time, naming the zone.
  function local(el) {
    var d = new Date(el.getAttribute('datetime'));
    if (isNaN(d.getTime())) return;
    el.textContent = d.toLocaleString(undefined, { timeZoneName: 'short' });
  }
  function left(seconds) {
    if (seconds <= 0) return 'expired';
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + s + 's';
  }
  function tick() {
    var now = Math.floor(Date.now() / 1000);
    document.querySelectorAll('[data-exp]').forEach(function (el) {
      el.textContent = left(Number(el.getAttribute('data-exp')) - now);
    });
  }
  function filter(input) {
    var q = input.value.toLowerCase();
    document.querySelectorAll('tbody tr').forEach(function (tr) {
      tr.hidden = q !== '' && tr.textContent.toLowerCase().indexOf(q) < 0;
    });
  }
  function follow(box) {
    function busy() {
      var inputs = box.querySelectorAll('input[name=reason]');
      for (var i = 0; i < inputs.length; i++) {
        if (inputs[i].value !== '' || inputs[i] === document.activeElement) return true;
      }
      return false;
    }
    var source = new EventSource(box.getAttribute('data-live'));
    source.addEventListener('grants', function () {
      if (busy()) return;
      fetch(location.href, { credentials: 'same-origin' }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (!html || busy()) return;
        var fresh = new DOMParser().parseFromString(html, 'text/html').getElementById('grants');
        if (!fresh) return;
        box.innerHTML = fresh.innerHTML;
        box.querySelectorAll('time[data-local]').forEach(local);
        tick();
        var f = document.querySelector('#filter-live input');
        if (f) filter(f);
      });
    });
  }
  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('time[data-local]').forEach(local);
    tick();
    setInterval(tick, 1000);
    var f = document.getElementById('filter-live');
    if (f) {
      f.hidden = false;
      f.querySelector('input').addEventListener('input', function (e) { filter(e.target); });
    }
    var box = document.getElementById('grants');
    if (box && window.EventSource) follow(box);
  });
})();
