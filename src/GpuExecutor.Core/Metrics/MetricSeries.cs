using System.Globalization;
using System.Text;

namespace GpuExecutor.Metrics;

/// <summary>
/// One line of Prometheus' text exposition format: a metric name, its labels, a value. Label
/// values come from jobs (a run key, a project id) and are escaped as the format says
/// (backslash, double quote, newline), so no value can end its line or forge another series.
/// </summary>
public static class MetricSeries
{
    public static string Of(string name, params (string Label, string Value)[] labels)
    {
        if (labels.Length == 0)
            return name;
        var text = new StringBuilder(name).Append('{');
        for (var index = 0; index < labels.Length; index++)
        {
            if (index > 0)
                text.Append(',');
            text.Append(labels[index].Label).Append("=\"");
            foreach (var character in labels[index].Value)
            {
                text.Append(character switch
                {
                    '\\' => "\\\\",
                    '"' => "\\\"",
                    '\n' => "\\n",
                    _ when char.IsControl(character) => "_",
                    _ => character.ToString(),
                });
            }
            text.Append('"');
        }
        return text.Append('}').ToString();
    }

    /// <summary>The metric name of a series: what comes before its labels.</summary>
    public static string NameOf(string series)
    {
        var brace = series.IndexOf('{', StringComparison.Ordinal);
        return brace < 0 ? series : series[..brace];
    }

    public static string Value(double value) => value switch
    {
        double.PositiveInfinity => "+Inf",
        double.NegativeInfinity => "-Inf",
        _ when double.IsNaN(value) => "NaN",
        _ => value.ToString("R", CultureInfo.InvariantCulture),
    };

    /// <summary>A "series value" line; null when it is not one (a torn line).</summary>
    public static (string Series, double Value)? Parse(string line)
    {
        var space = line.LastIndexOf(' ');
        if (space <= 0 || !double.TryParse(line.AsSpan(space + 1), NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
            return null;
        return (line[..space], value);
    }
}
