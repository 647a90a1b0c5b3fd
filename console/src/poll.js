// usePoll: calls load() now and every `ms` while the component is shown
// (and the tab is visible), keeping the last answer and the last error.
// A call never overlaps the previous one.

import { useEffect, useRef, useState } from 'preact/hooks';

export function usePoll(load, ms, deps = []) {
    const [data, setData] = useState(null);
    const [error, setError] = useState(null);
    const once = useRef(null);

    useEffect(() => {
        let stopped = false;
        let timer = null;
        const fetchOnce = async () => {
            try {
                const d = await load();
                if (!stopped) { setData(d); setError(null); }
            } catch (e) {
                if (!stopped) setError(e);
            }
        };
        const loop = async () => {
            if (stopped) return;
            if (!document.hidden) await fetchOnce();
            if (!stopped) timer = setTimeout(loop, ms);
        };
        once.current = fetchOnce;
        setData(null);
        setError(null);
        loop();
        return () => { stopped = true; clearTimeout(timer); };
    }, deps);

    /* refresh now (after an action), outside the loop */
    const refresh = () => once.current && once.current();
    return { data, error, refresh };
}
