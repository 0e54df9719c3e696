// Model page: copy a prompt to the clipboard; like without leaving the page.
(function () {
  for (const button of document.querySelectorAll(".copy-prompt")) {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.prompt);
        button.textContent = "Copied";
      } catch (e) {  // clipboard needs a secure context; select the text instead
        window.prompt("Copy the prompt:", button.dataset.prompt);
      }
    });
  }
  const like = document.getElementById("like-form");
  if (!like) return;
  like.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = new FormData(like);
    let response;
    try {
      response = await fetch(like.action, { method: "POST", body, headers: { Accept: "application/json" } });
    } catch (err) {  // offline or the server is down: the plain form post shows the browser's own error
      like.submit();
      return;
    }
    if (response.status === 401) {  // logged out: log in, then come back to this page
      const answer = await response.json();
      window.location.assign(answer.login_url);
      return;
    }
    if (!response.ok) { like.submit(); return; }
    const data = await response.json();
    const button = document.getElementById("like-button");
    like.querySelector("input[name=like]").value = data.liked ? "0" : "1";
    button.setAttribute("aria-pressed", String(data.liked));
    button.innerHTML = `${data.liked ? "♥ Liked" : "♡ Like"} · <span id="like-count">${data.likes}</span>`;
  });
})();
