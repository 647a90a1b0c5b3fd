// A uPlot time-series chart in a div: made once, given new data on each
// render, resized with its box.  uPlot draws on a canvas: no HTML from
// the data reaches the page.

import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

const COLORS = ['#2e7d32', '#1565c0', '#ef6c00', '#c62828', '#6a1b9a', '#00838f'];

function options(title, labels, unit, width, stacked) {
    return {
        title, width, height: 180,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1)] } },
        axes: [{}, { label: unit, size: 50 }],
        series: [{}, ...labels.map((label, i) => ({
            label, stroke: COLORS[i % COLORS.length], width: 1.5,
            fill: stacked ? `${COLORS[i % COLORS.length]}22` : undefined,
            spanGaps: false,
        }))],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
    };
}

export function Chart({ title, labels, unit, data, testid, total, stacked }) {
    const box = useRef(null);
    const plot = useRef(null);

    useEffect(() => {
        const el = box.current;
        plot.current = new uPlot(options(title, labels, unit, el.clientWidth || 600, stacked), data, el);
        const ro = new ResizeObserver(() => {
            if (plot.current && el.clientWidth)
                plot.current.setSize({ width: el.clientWidth, height: 180 });
        });
        ro.observe(el);
        return () => { ro.disconnect(); plot.current.destroy(); plot.current = null; };
    }, [title, labels.join(',')]);

    useEffect(() => {
        if (plot.current) plot.current.setData(data);
    }, [data]);

    const x = data[0];
    return <div class="chart" ref={box} data-testid={testid} data-total={total}
        data-points={x.length} data-end={x.length ? x[x.length - 1] : 0} />;
}
