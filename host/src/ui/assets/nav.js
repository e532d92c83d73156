// Every page's header: marks the current page's link (aria-current) and, on narrow screens, folds the menu behind
// a button. Without this script the menu simply stays open and wraps.
const header = document.querySelector('header.top');
const nav = document.getElementById('main-nav');
const toggle = document.getElementById('menu-toggle');

if (nav) {
  // The link whose path is the page's first segment: /jobs/7 is under Jobs.
  const section = `/${window.location.pathname.split('/')[1] || ''}`;
  for (const link of nav.querySelectorAll('a')) {
    if (new URL(link.href).pathname === section) link.setAttribute('aria-current', 'page');
  }
}

if (header && toggle) {
  header.classList.add('foldable');
  toggle.hidden = false;
  toggle.addEventListener('click', () => {
    const open = toggle.getAttribute('aria-expanded') !== 'true';
    toggle.setAttribute('aria-expanded', String(open));
    header.classList.toggle('menu-open', open);
  });
}
