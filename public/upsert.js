/*
 * The chat page's "upsert" swap, for live frames and for the answers to its
 * forms: htmx's own hx-upsert extension (each element of the fragment takes
 * the place of the element with its id, or is inserted among the others in
 * id order), except that an element already on the page is morphed into its
 * new state with htmx's own morph, not replaced by a new element. Replaced,
 * the reaction a keyboard user just pressed lost the focus to <body>, an open
 * "Retract?" closed whenever anyone reacted to that message, and the last
 * message played its arrival animation again on every change to it.
 */
(() => {
  let api
  const compare = (a, b) => a.localeCompare(b, undefined, { numeric: true })

  htmx.registerExtension('upsert', {
    init: (internalApi) => {
      api = internalApi
    },
    // A message's new state never has its <details> open: what this reader opened stays open.
    htmx_before_morph_attr: (element, detail) => (element.localName === 'details' && detail.attrName === 'open' && detail.newValue === null ? false : undefined),
    handle_swap: (style, target, fragment) => {
      if (style !== 'upsert') return false
      const placed = []
      for (const element of Array.from(fragment.children)) {
        const existing = element.id ? document.getElementById(element.id) : null
        if (existing) {
          const one = document.createDocumentFragment()
          one.append(element)
          api.morph(existing, one, false)
          placed.push(document.getElementById(element.id) ?? existing)
          continue
        }
        const before = element.id ? Array.from(target.children).find((child) => child.id && compare(element.id, child.id) < 0) : undefined
        target.insertBefore(element, before ?? null)
        placed.push(element)
      }
      // What htmx processes after the swap (and marks htmx-added): the elements as they are on the page now.
      return placed
    },
  })
})()
