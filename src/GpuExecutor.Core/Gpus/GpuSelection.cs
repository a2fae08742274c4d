namespace GpuExecutor.Gpus;

/// <summary>Picks the best-connected set of GPUs among the free ones.</summary>
public static class GpuSelection
{
    /// <summary>Beyond this many candidate sets, choose greedily instead of trying them all.</summary>
    private const int MaximumSetsToScore = 50_000;

    /// <summary>
    /// The set of <paramref name="count"/> GPUs whose weakest link is strongest (NVLink before the
    /// same PCIe switch before across sockets), then whose links are strongest in total, then
    /// with the lowest indexes. Null when there are not enough candidates.
    /// </summary>
    public static IReadOnlyList<GpuDevice>? Choose(IReadOnlyList<GpuDevice> candidates, int count, GpuTopology topology)
    {
        if (count <= 0)
            return [];
        if (candidates.Count < count)
            return null;
        var ordered = candidates.OrderBy(gpu => gpu.Index).ToList();
        if (count == 1)
            return [ordered[0]];

        if (Combinations(ordered.Count, count) > MaximumSetsToScore)
            return ChooseGreedily(ordered, count, topology);

        IReadOnlyList<GpuDevice>? best = null;
        (int Weakest, int Total) bestScore = (int.MinValue, int.MinValue);
        foreach (var set in Sets(ordered, count))
        {
            var score = Score(set, topology);
            // Sets come in index order, so on a tie the earlier (lower-index) set stays.
            if (score.Weakest > bestScore.Weakest || (score.Weakest == bestScore.Weakest && score.Total > bestScore.Total))
            {
                best = set;
                bestScore = score;
            }
        }
        return best;
    }

    public static (int Weakest, int Total) Score(IReadOnlyList<GpuDevice> set, GpuTopology topology)
    {
        var weakest = int.MaxValue;
        var total = 0;
        for (var first = 0; first < set.Count; first++)
        {
            for (var second = first + 1; second < set.Count; second++)
            {
                var rank = topology.Link(set[first].Index, set[second].Index).Rank;
                weakest = Math.Min(weakest, rank);
                total += rank;
            }
        }
        return (weakest == int.MaxValue ? 0 : weakest, total);
    }

    private static IReadOnlyList<GpuDevice> ChooseGreedily(List<GpuDevice> ordered, int count, GpuTopology topology)
    {
        // Start from each GPU, repeatedly add the one best linked to those chosen; keep the best.
        IReadOnlyList<GpuDevice> best = ordered.Take(count).ToList();
        var bestScore = Score(best, topology);
        foreach (var seed in ordered)
        {
            var chosen = new List<GpuDevice> { seed };
            while (chosen.Count < count)
            {
                var next = ordered
                    .Where(gpu => !chosen.Contains(gpu))
                    .OrderByDescending(gpu => chosen.Min(other => topology.Link(other.Index, gpu.Index).Rank))
                    .ThenBy(gpu => gpu.Index)
                    .First();
                chosen.Add(next);
            }
            chosen.Sort((left, right) => left.Index.CompareTo(right.Index));
            var score = Score(chosen, topology);
            if (score.Weakest > bestScore.Weakest || (score.Weakest == bestScore.Weakest && score.Total > bestScore.Total))
            {
                best = chosen;
                bestScore = score;
            }
        }
        return best;
    }

    private static IEnumerable<IReadOnlyList<GpuDevice>> Sets(List<GpuDevice> items, int count)
    {
        var indexes = Enumerable.Range(0, count).ToArray();
        while (true)
        {
            yield return indexes.Select(index => items[index]).ToList();
            var position = count - 1;
            while (position >= 0 && indexes[position] == items.Count - count + position)
                position--;
            if (position < 0)
                yield break;
            indexes[position]++;
            for (var next = position + 1; next < count; next++)
                indexes[next] = indexes[next - 1] + 1;
        }
    }

    private static long Combinations(int n, int k)
    {
        long result = 1;
        for (var i = 1; i <= k; i++)
        {
            result = result * (n - k + i) / i;
            if (result > MaximumSetsToScore)
                return result;
        }
        return result;
    }
}
