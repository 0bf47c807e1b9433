// Progressive enhancement only: every page works without this file.
document.addEventListener("change", function (event) {
  var box = event.target;
  if (box.classList && box.classList.contains("select-all")) {
    var form = box.closest("form");
    form.querySelectorAll('input[name="ids"]').forEach(function (b) { b.checked = box.checked; });
  }
});
