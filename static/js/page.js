// Small behaviours of every page, here because the pages' Content-Security-Policy runs no inline
// handlers (flux_studio/csp.py):
// - a form with data-confirm="question" asks before it submits (a delete);
// - a field with data-select-on-click selects all its text when clicked (a token to copy).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !confirm(question)) event.preventDefault();
});
document.addEventListener("click", (event) => {
  if (event.target.matches && event.target.matches("[data-select-on-click]")) event.target.select();
});
