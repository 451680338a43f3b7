"""The page's CSS (``gr.mount_gradio_app(css=...)``): the review card's layout, phone sizes, the leaderboard."""

from __future__ import annotations

from review.ui.leaderboard_html import LEADERBOARD_CSS

REVIEW_CSS = """#review-card, #review-card .html-container { padding: 0 !important; }
.review-card p { margin: 0.2em 0; }
#review-progress, #review-reveal { font-size: 1.1em; }
.review-card p:empty { margin: 0; }
.review-figure { margin: 0; text-align: center; }
.review-figure figcaption { font-weight: 600; margin-bottom: 0.2em; }
.review-figure a { display: block; padding: 0; margin: 0; }
/* the compared images: side by side, as large as the width allows while the answers stay on screen */
.review-figure img { display: block; width: 100%; height: auto; aspect-ratio: 1 / 1; object-fit: contain;
  margin: 0; max-height: max(160px, calc(100vh - 430px)); }
#review-images { display: flex; flex-wrap: nowrap; gap: 8px; margin: 8px 0; }
#review-images > figure { flex: 1 1 0; min-width: 0; }
#review-mode .wrap { flex-wrap: nowrap; gap: 6px; }
/* the reference face: small, beside the question */
#review-head { display: flex; flex-wrap: nowrap; align-items: center; gap: 12px; }
#review-face { flex: 0 0 auto; min-width: 0; }
#review-text { flex: 1 1 0; min-width: 0; }
#review-face img { width: auto; height: 80px; max-height: 80px; aspect-ratio: auto; }
#review-face figcaption { font-size: 0.75em; font-weight: normal; }
/* the answers in one row; buttons in Gradio's own colours */
#review-answers { display: flex; flex-wrap: nowrap; gap: 6px; margin: 8px 0; }
.review-card button { flex: 1 1 0; min-width: 0; white-space: normal; cursor: pointer;
  padding: var(--size-2) 4px; border-radius: var(--button-large-radius); font-weight: 600;
  font-size: var(--button-large-text-size); border: 1px solid var(--button-primary-border-color);
  background: var(--button-primary-background-fill); color: var(--button-primary-text-color); }
.review-card button:hover:not([disabled]) { background: var(--button-primary-background-fill-hover); }
.review-card button[disabled] { opacity: 0.5; cursor: not-allowed; }
#next-pair, #more-pairs { display: block; width: 100%; margin: 8px 0; border-color: var(--button-secondary-border-color);
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); }
@media (max-width: 640px) {
  .column, .tabitem { gap: 6px !important; }
  .tabitem { padding: 4px 0 !important; }
  #review-reveal { font-size: 0.95em; margin: 0; }
  #next-pair, #more-pairs { padding-top: 6px; padding-bottom: 6px; }
  #app-title h2 { font-size: 1.15em; margin: 0; }
  #banner p { font-size: 0.8em; margin: 0; }
  #review-mode { padding: 4px 6px !important; }
  #review-mode .wrap label { padding: 4px 6px; font-size: 0.85em; }
  #review-face img { height: 56px; }
  .review-figure img { max-height: max(120px, calc(100vh - 330px)); }
  #review-images figcaption { font-size: 0.8em; margin-bottom: 0; }
  #review-answers button { font-size: 0.8em; line-height: 1.25; }
  #review-progress, #review-question { font-size: 0.95em; margin: 0; }
}"""
CSS = REVIEW_CSS + LEADERBOARD_CSS
# Gradio scopes `css` to the inside of the app; the page margin (32 px a side, 17 % of a phone's width) is outside
HEAD = ("<style>@media (max-width: 640px) { .gradio-container .main.app "
        "{ padding: 8px 8px !important; } }</style>")
