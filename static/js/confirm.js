// Forms with data-confirm="question" ask before they submit (the page's policy runs no inline
// handlers, so this replaces onsubmit="return confirm(...)").
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !confirm(question)) event.preventDefault();
});
